"""Losses against naive per-sample loops in float64 (values and gradients), plus their invariances.

`naive_info_nce` is the project's one naive InfoNCE: test_methods.py checks the methods' `contrast`
against it too."""

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


def naive_info_nce(query, key, temperature, *, batch_negatives=True, own_keys_start=0, queue=None,
                   extra_positives=None, hard_negatives=None):
    """-log(sum over positives of exp(l) / sum over all of exp(l)), one row at a time. Row i's
    candidates: every key (its own is key[own_keys_start + i]), or only its own without batch
    negatives; then the queue's rows as given (positives where extra_positives marks them); then
    its own hard negatives."""
    batch = query.shape[0]
    total = 0.0
    for i in range(batch):
        q = unit(query[i])
        own = own_keys_start + i if batch_negatives else i
        candidates = [(unit(key[j]), j == own) for j in (range(len(key)) if batch_negatives else [i])]
        if queue is not None:
            candidates += [(queue[m], extra_positives is not None and bool(extra_positives[i, m]))
                           for m in range(len(queue))]
        if hard_negatives is not None:
            candidates += [(unit(h), False) for h in hard_negatives[i]]
        exps = [(torch.exp(torch.dot(q, c) / temperature), positive) for c, positive in candidates]
        total = total - torch.log(sum(e for e, positive in exps if positive) / sum(e for e, _ in exps))
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


# Which candidates a row has besides the batch keys (keyword arguments of contrastive_logits).
CANDIDATES = ("batch keys", "queue", "queue + extra positives", "hard negatives",
              "queue + extra positives + hard negatives", "own key + queue (MoCo v2)",
              "keys of 3 ranks, this rank's in the middle")


def random_inputs(batch, candidates, seed):
    """query, key (leaves, float64) and the keyword arguments that give `candidates`."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
    query = draw(batch, DIM)
    key = draw(3 * batch if candidates.startswith("keys of 3 ranks") else batch, DIM)
    kwargs = {}
    if "queue" in candidates:
        # a queue holds unit keys (moco.KeyQueue normalises them on the way in)
        kwargs["queue"] = torch.nn.functional.normalize(torch.randn(QUEUE, DIM, generator=generator,
                                                                    dtype=torch.float64), dim=1).requires_grad_()
    if "extra positives" in candidates:
        kwargs["extra_positives"] = torch.rand(batch, QUEUE, generator=generator) < 0.3
    if "hard negatives" in candidates:
        kwargs["hard_negatives"] = draw(batch, HARD, DIM)
    if "MoCo v2" in candidates:
        kwargs["batch_negatives"] = False
    if candidates.startswith("keys of 3 ranks"):
        kwargs["own_keys_start"] = batch
    return query, key, kwargs


@pytest.mark.parametrize("candidates", CANDIDATES)
def test_info_nce_matches_naive_loop_in_value_and_gradient(candidates):
    for seed, (temperature, batch) in enumerate(itertools.product(TEMPERATURES, BATCH_SIZES)):
        query, key, kwargs = random_inputs(batch, candidates, seed)
        loss = info_nce(query, key, temperature, **kwargs)
        expected = naive_info_nce(query, key, temperature, **kwargs)
        torch.testing.assert_close(loss, expected)
        # the queue is a buffer of past keys: no gradient reaches it
        leaves = [query, key, *([kwargs["hard_negatives"]] if "hard_negatives" in kwargs else [])]
        for got, want in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(expected, leaves)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("temperature", "batch"), list(itertools.product(TEMPERATURES, BATCH_SIZES)))
def test_nt_xent_matches_symmetric_naive_definition(temperature, batch):
    z1, z2, _ = random_inputs(batch, "batch keys", seed=batch)
    loss = nt_xent(z1, z2, temperature)
    expected = naive_nt_xent(z1, z2, temperature)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nt_xent(z2, z1, temperature), expected)
    for got, want in zip(torch.autograd.grad(loss, [z1, z2]), torch.autograd.grad(expected, [z1, z2])):
        torch.testing.assert_close(got, want)


def test_losses_are_invariant_to_the_scale_of_what_they_normalise():
    query, key, kwargs = random_inputs(7, "queue + extra positives + hard negatives", seed=1)
    scaled = {**kwargs, "hard_negatives": 5 * kwargs["hard_negatives"]}
    torch.testing.assert_close(info_nce(3 * query, 0.2 * key, 0.1, **scaled), info_nce(query, key, 0.1, **kwargs))
    torch.testing.assert_close(nt_xent(4 * query, 0.5 * key), nt_xent(query, key))


def test_aligned_batch_at_low_temperature_has_near_zero_loss():
    embeddings = torch.eye(8, 16)
    assert info_nce(embeddings, embeddings.clone(), temperature=0.01) < 1e-6
    assert nt_xent(embeddings, embeddings.clone(), temperature=0.01) < 1e-6
    # Uniform logits: the loss is log(number of candidates).
    same = torch.ones(4, 16)
    assert info_nce(same, same, temperature=0.1).item() == pytest.approx(math.log(4))


def test_the_keys_of_other_ranks_are_negatives_and_only_the_own_key_is_positive():
    """Gathered keys: row i's positive is key[own_keys_start + i]; every other rank's key is one
    more negative, so the loss equals the one-rank loss with those keys as a queue."""
    query, key, _ = random_inputs(4, "keys of 3 ranks, this rank's in the middle", seed=3)
    logits, mask = contrastive_logits(query, key, 0.5, own_keys_start=4)
    assert mask.nonzero().tolist() == [[i, 4 + i] for i in range(4)]
    others = torch.nn.functional.normalize(torch.cat([key[:4], key[8:]]), dim=1)
    torch.testing.assert_close(info_nce(query, key, 0.5, own_keys_start=4), info_nce(query, key[4:8], 0.5, queue=others))


def test_mean_similarities_and_accuracy_on_embeddings_with_known_cosines():
    """Queries e1, e2 and keys e1, (e1 + e2) / sqrt 2: the positive cosines are 1 and 1/sqrt 2, the
    negatives' 1/sqrt 2 (q_1 . k_2) and 0 (q_2 . k_1)."""
    e1, e2 = torch.eye(2)
    query, key = torch.stack([e1, e2]), torch.stack([e1, (e1 + e2) / math.sqrt(2)])
    logits, mask = contrastive_logits(query, key, 0.5)
    positive, negative = mean_similarities(logits, mask, 0.5)
    assert positive.item() == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert negative.item() == pytest.approx((1 / math.sqrt(2) + 0) / 2)
    # row 1's best key is its own (1 > 0.71); row 2's too (0.71 > 0)
    assert contrastive_accuracy(logits, mask).item() == 1.0
    rigged = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 9.0], [0.0, 7.0, 1.0]])
    rigged_mask = torch.tensor([[True, False, False], [False, True, True], [False, False, True]])
    assert contrastive_accuracy(rigged, rigged_mask).item() == pytest.approx(2 / 3)


def test_invalid_arguments_are_rejected():
    query = torch.randn(3, 4)
    with pytest.raises(ValueError, match="extra_positives"):
        info_nce(query, query, extra_positives=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="hard_negatives"):
        info_nce(query, query, hard_negatives=torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="own keys"):
        info_nce(query, torch.randn(2, 4))
    with pytest.raises(ValueError, match="own keys"):
        info_nce(query, torch.randn(6, 4), own_keys_start=4)
    with pytest.raises(ValueError, match="query and key"):
        info_nce(query, torch.randn(3, 5))
