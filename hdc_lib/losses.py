"""Contrastive losses (InfoNCE with a MoCo queue, per-row hard negatives and extra positives;
NT-Xent) and the statistics methods log next to them.

Layout of the logits, shared by every function here: row i belongs to query q_i; its columns are,
in this order,
  1. keys: every key of the batch (column j is k_j; q_i's own key is its positive, the others are
     negatives), or with `batch_negatives=False` only q_i's own key (MoCo v2). `key` may hold more
     rows than `query` (the keys of every rank, gathered): q_i's own key is then row
     `own_keys_start + i`;
  2. queue: the M entries of a queue shared by every row (MoCo), negatives unless `extra_positives`
     (B, M) marks some of them as further positives of the row (DCLR's cross-video search);
  3. hard negatives: M' negatives of row i alone (B, M', D), e.g. HDC's same-video other-time view.
Query, key and hard negatives are L2-normalised inside; queue entries are used as given, because a
queue stores keys that were normalised when they entered it (moco.KeyQueue). Logits are therefore
cosine similarities divided by the temperature tau.
"""

import torch
import torch.nn.functional as F


def contrastive_logits(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.1,
    *,
    batch_negatives: bool = True,
    own_keys_start: int = 0,
    queue: torch.Tensor | None = None,
    extra_positives: torch.Tensor | None = None,
    hard_negatives: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, N) of every query against its candidate keys (the module docstring's layout) and
    the positive mask (B, N) bool.

    query: (B, D). key: (K, D), K >= own_keys_start + B (K = B without batch negatives).
    queue: (M, D) unit rows; extra_positives: (B, M) bool, needs a queue. hard_negatives: (B, M', D).
    """
    batch = query.shape[0]
    if query.dim() != 2 or key.dim() != 2 or key.shape[1] != query.shape[1]:
        raise ValueError(f"losses.py: query and key must both be (rows, D), got {tuple(query.shape)} and {tuple(key.shape)}")
    own_keys = range(own_keys_start, own_keys_start + batch) if batch_negatives else range(batch)
    if key.shape[0] < own_keys.stop or (not batch_negatives and key.shape[0] != batch):
        raise ValueError(f"losses.py: {batch} queries need their own keys at rows {own_keys.start}.."
                         f"{own_keys.stop - 1} of key, which has {key.shape[0]}")
    if extra_positives is not None and (queue is None or extra_positives.shape != (batch, queue.shape[0])):
        raise ValueError("losses.py: extra_positives marks queue entries: it needs a queue and shape (B, queue size)")
    if hard_negatives is not None and (hard_negatives.dim() != 3 or hard_negatives.shape[0] != batch):
        raise ValueError(f"losses.py: hard_negatives must be (B, M, D), got {tuple(hard_negatives.shape)}")
    query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    rows = torch.arange(batch, device=query.device)
    if batch_negatives:
        columns = [query @ key.t()]
        positive = torch.zeros_like(columns[0], dtype=torch.bool)
        positive[rows, own_keys.start + rows] = True
    else:
        # MoCo v2: q_i . k_i is the only key column of row i
        columns = [(query * key).sum(dim=1, keepdim=True)]
        positive = torch.ones_like(columns[0], dtype=torch.bool)
    positives = [positive]
    if queue is not None:
        columns.append(query @ queue.detach().t())
        positives.append(extra_positives if extra_positives is not None
                         else torch.zeros_like(columns[-1], dtype=torch.bool))
    if hard_negatives is not None:
        hard = F.normalize(hard_negatives, dim=-1)
        columns.append(torch.einsum("bd,bmd->bm", query, hard))
        positives.append(torch.zeros_like(columns[-1], dtype=torch.bool))
    # l_ij = cos(q_i, c_j) / tau over all candidates c_j of row i (keys, queue, hard negatives)
    logits = torch.cat(columns, dim=1) / temperature
    return logits, torch.cat(positives, dim=1)


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1, **candidates) -> torch.Tensor:
    """InfoNCE averaged over the batch (scalar).

    Each row's loss is -log of the softmax probability of its positives, summed when there are
    several: the usual one-positive InfoNCE by default, the multi-positive (MIL-NCE style) form
    when `extra_positives` marks queue entries too. `candidates` as in ``contrastive_logits``.
    """
    return info_nce_from_logits(*contrastive_logits(query, key, temperature, **candidates))


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
