"""Contrastive losses (InfoNCE with optional queue / hard / multiple positives, NT-Xent) and the
statistics methods log next to them.

Layout of the logits, shared by every function here: row i belongs to query q_i; its columns are
the B keys of the batch (column i is q_i's own key, the other B-1 are other videos) followed by the
M extra negatives (a MoCo queue shared by all rows, or hard negatives of row i alone). Inputs are
L2-normalised inside, so logits are cosine similarities divided by the temperature tau.
"""

import torch
import torch.nn.functional as F


def contrastive_logits(
    query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1, negatives: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, B+M) of every query against the batch keys and the extra negatives, and the default
    positive mask (B, B+M) bool: True on the diagonal of the first B columns (q_i's own key).

    query, key: (B, D). negatives: None (M = 0), (M, D) shared by all rows (a queue), or (B, M, D)
    per row (hard negatives, e.g. HDC's same-video other-time view).
    """
    if query.shape != key.shape or query.dim() != 2:
        raise ValueError(f"losses.py: query and key must both be (B, D), got {tuple(query.shape)} and {tuple(key.shape)}")
    query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
    columns = [query @ key.T]
    if negatives is not None:
        negatives = F.normalize(negatives, dim=-1)
        if negatives.dim() == 2:
            columns.append(query @ negatives.T)
        elif negatives.dim() == 3 and negatives.shape[0] == query.shape[0]:
            columns.append(torch.einsum("bd,bmd->bm", query, negatives))
        else:
            raise ValueError(f"losses.py: negatives must be (M, D) or (B, M, D), got {tuple(negatives.shape)}")
    # l_ij = cos(q_i, k_j) / tau over all candidate keys k_j (batch keys, then negatives)
    logits = torch.cat(columns, dim=1) / temperature
    positive_mask = torch.zeros_like(logits, dtype=torch.bool)
    positive_mask[:, : query.shape[0]].fill_diagonal_(True)
    return logits, positive_mask


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.1,
    negatives: torch.Tensor | None = None,
    positive_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE averaged over the batch (scalar).

    Each row's loss is -log of the softmax probability of its positives, summed when there are
    several: the usual one-positive InfoNCE by default, the multi-positive (MIL-NCE style) form that
    DCLR's cross-video search uses when ``positive_mask`` (B, B+M) bool marks more columns.
    Arguments as in ``contrastive_logits``; every row needs at least one positive.
    """
    logits, default_mask = contrastive_logits(query, key, temperature, negatives)
    if positive_mask is None:
        positive_mask = default_mask
    elif positive_mask.shape != logits.shape:
        raise ValueError(f"losses.py: positive_mask must be {tuple(logits.shape)}, got {tuple(positive_mask.shape)}")
    if not positive_mask.any(dim=1).all():
        raise ValueError("losses.py: every row of positive_mask needs at least one positive")
    return info_nce_from_logits(logits, positive_mask)


def info_nce_from_logits(logits: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
    """The InfoNCE of ready-made logits (B, N) with positives marked in ``positive_mask`` (B, N)."""
    positive_logits = logits.masked_fill(~positive_mask, float("-inf"))
    # loss_i = -log( sum_{j in pos(i)} exp(l_ij) / sum_j exp(l_ij) ), in logsumexp form for stability
    row_losses = torch.logsumexp(logits, dim=1) - torch.logsumexp(positive_logits, dim=1)
    return row_losses.mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss (scalar) for two views z1, z2 (N, D) of N samples.

    The 2N embeddings form one pool; each one's positive is the other view of its sample and its
    negatives are the other 2N-2 embeddings (itself excluded). Averaged over all 2N anchors, so the
    loss is symmetric in z1 and z2.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"losses.py: z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    # s_ab = cos(z_a, z_b) / tau; a == b is excluded by setting s_aa = -inf
    similarities = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    partner = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    # loss = mean_a -log( exp(s_a,partner(a)) / sum_{b != a} exp(s_ab) )
    return F.cross_entropy(similarities, partner)


def contrastive_accuracy(logits: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
    """Share of rows whose highest logit is one of their positives (top-1 accuracy; scalar)."""
    return positive_mask.gather(1, logits.argmax(dim=1, keepdim=True)).float().mean()


def mean_similarities(
    logits: torch.Tensor, positive_mask: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine similarity of the positive pairs and of the negative pairs (two scalars), for logging."""
    cosines = logits.detach() * temperature
    return cosines[positive_mask].mean(), cosines[~positive_mask].mean()
