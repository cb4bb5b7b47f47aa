"""Losses against naive per-sample loops in float64 (values and gradients), plus their invariances."""

import itertools
import math

import pytest
import torch

from hdc_lib.losses import contrastive_accuracy, contrastive_logits, info_nce, mean_similarities, nt_xent

TEMPERATURES = (0.07, 0.1, 0.5, 1.0)
BATCH_SIZES = (1, 2, 7, 32)
DIM, QUEUE, HARD = 5, 9, 3


def unit(v):
    return v / torch.sqrt(sum(x * x for x in v))


def naive_info_nce(query, key, temperature, negatives=None, positive_mask=None):
    """-log(sum over positives of exp(l) / sum over all of exp(l)), one row at a time."""
    batch = query.shape[0]
    total = 0.0
    for i in range(batch):
        q = unit(query[i])
        candidates = [unit(key[j]) for j in range(batch)]
        if negatives is not None:
            rows = negatives if negatives.dim() == 2 else negatives[i]
            candidates += [unit(n) for n in rows]
        exps = [torch.exp(torch.dot(q, c) / temperature) for c in candidates]
        positives = [j for j in range(len(candidates)) if (positive_mask[i, j] if positive_mask is not None else j == i)]
        total = total - torch.log(sum(exps[j] for j in positives) / sum(exps))
    return total / batch


def naive_nt_xent(z1, z2, temperature):
    pool = [unit(z) for z in torch.cat([z1, z2])]
    n = z1.shape[0]
    total = 0.0
    for a in range(2 * n):
        partner = (a + n) % (2 * n)
        exps = {b: torch.exp(torch.dot(pool[a], pool[b]) / temperature) for b in range(2 * n) if b != a}
        total = total - torch.log(exps[partner] / sum(exps.values()))
    return total / (2 * n)


def random_inputs(batch, negatives_kind, seed):
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
    negatives = {"none": None, "queue": draw(QUEUE, DIM), "per_row": draw(batch, HARD, DIM)}[negatives_kind]
    return draw(batch, DIM), draw(batch, DIM), negatives, generator


def random_positive_mask(batch, num_columns, generator):
    mask = torch.rand(batch, num_columns, generator=generator) < 0.3
    mask[torch.arange(batch), torch.randint(num_columns, (batch,), generator=generator)] = True
    return mask


@pytest.mark.parametrize("negatives_kind", ["none", "queue", "per_row"])
@pytest.mark.parametrize("multi_positive", [False, True])
def test_info_nce_matches_naive_loop_in_value_and_gradient(negatives_kind, multi_positive):
    for seed, (temperature, batch) in enumerate(itertools.product(TEMPERATURES, BATCH_SIZES)):
        query, key, negatives, generator = random_inputs(batch, negatives_kind, seed)
        num_columns = batch + (0 if negatives is None else negatives.shape[-2])
        mask = random_positive_mask(batch, num_columns, generator) if multi_positive else None
        loss = info_nce(query, key, temperature, negatives, mask)
        expected = naive_info_nce(query, key, temperature, negatives, mask)
        torch.testing.assert_close(loss, expected)
        leaves = [t for t in (query, key, negatives) if t is not None]
        for got, want in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(expected, leaves)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("temperature", "batch"), list(itertools.product(TEMPERATURES, BATCH_SIZES)))
def test_nt_xent_matches_symmetric_naive_definition(temperature, batch):
    z1, z2, _, _ = random_inputs(batch, "none", seed=batch)
    loss = nt_xent(z1, z2, temperature)
    expected = naive_nt_xent(z1, z2, temperature)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nt_xent(z2, z1, temperature), expected)
    for got, want in zip(torch.autograd.grad(loss, [z1, z2]), torch.autograd.grad(expected, [z1, z2])):
        torch.testing.assert_close(got, want)


def test_losses_are_invariant_to_input_scale():
    query, key, negatives, _ = random_inputs(7, "queue", seed=1)
    torch.testing.assert_close(info_nce(3 * query, 0.2 * key, 0.1, 5 * negatives), info_nce(query, key, 0.1, negatives))
    torch.testing.assert_close(nt_xent(4 * query, 0.5 * key), nt_xent(query, key))


def test_aligned_batch_at_low_temperature_has_near_zero_loss():
    embeddings = torch.eye(8, 16)
    assert info_nce(embeddings, embeddings.clone(), temperature=0.01) < 1e-6
    assert nt_xent(embeddings, embeddings.clone(), temperature=0.01) < 1e-6
    # Uniform logits: the loss is log(number of candidates).
    same = torch.ones(4, 16)
    assert info_nce(same, same, temperature=0.1).item() == pytest.approx(math.log(4))


def test_logits_layout_and_logging_helpers():
    query, key, negatives, _ = random_inputs(4, "per_row", seed=2)
    logits, mask = contrastive_logits(query, key, 0.5, negatives)
    assert logits.shape == mask.shape == (4, 4 + HARD)
    assert mask.sum() == 4 and mask[:, :4].diagonal().all()
    q, k = torch.nn.functional.normalize(query, dim=1), torch.nn.functional.normalize(key, dim=1)
    torch.testing.assert_close(logits[:, :4], q @ k.T / 0.5)
    positive, negative = mean_similarities(logits, mask, 0.5)
    torch.testing.assert_close(positive, (q * k).sum(1).mean())
    torch.testing.assert_close(negative, (logits[~mask] * 0.5).mean())

    rigged = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 9.0], [0.0, 7.0, 1.0]])
    rigged_mask = torch.tensor([[True, False, False], [False, True, True], [False, False, True]])
    assert contrastive_accuracy(rigged, rigged_mask).item() == pytest.approx(2 / 3)


def test_invalid_arguments_are_rejected():
    query = torch.randn(3, 4)
    with pytest.raises(ValueError, match="at least one positive"):
        info_nce(query, query, positive_mask=torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive_mask"):
        info_nce(query, query, positive_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="negatives"):
        info_nce(query, query, negatives=torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="query and key"):
        info_nce(query, torch.randn(2, 4))
