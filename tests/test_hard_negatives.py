"""Temporal hard negatives (the clip with its frames reversed or shuffled) in the coupled baseline,
built as HDC builds them, so the coupled control differs from HDC only in decoupling."""
import pytest
import torch
import torch.nn.functional as F

from hdc_lib.config import ConfigError
from hdc_lib.coupled import Coupled, CoupledConfig
from hdc_lib.experiment import load_config
from hdc_lib.views import reordered


def test_reordered_reverses_or_shuffles_the_frames_only():
    clip = torch.randn(3, 2, 5, 4, 4)
    assert torch.equal(reordered(clip, "reversed"), clip[:, :, torch.arange(4, -1, -1)])
    shuffled = reordered(clip, "shuffled", torch.Generator().manual_seed(0))
    for b in range(3):  # the same frames, in another order
        frames = [clip[b, :, t] for t in range(5)]
        order = [next(i for i, f in enumerate(frames) if torch.equal(f, shuffled[b, :, t])) for t in range(5)]
        assert sorted(order) == list(range(5)) and order != list(range(5))
    with pytest.raises(ValueError):
        reordered(clip, "sideways")


def naive_loss(z_a, z_b, hard, temperature):
    """Per row i of each direction: -log softmax over [q.k_j for all j] ++ [q.h_i,m]; mean."""
    losses = []
    for query, key in ((z_a, z_b), (z_b, z_a)):
        q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
        for i in range(len(q)):
            logits = [q[i] @ k[j] for j in range(len(k))]
            logits += [q[i] @ F.normalize(h, dim=0) for h in hard[i]]
            logits = torch.stack(logits) / temperature
            losses.append(-(logits[i] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


def test_coupled_reversed_hard_negative_matches_a_naive_loop():
    torch.manual_seed(0)
    model = Coupled(CoupledConfig(extra_hard_negatives=("reversed",)))
    windows = torch.randint(0, 256, (4, 2, 8, 36, 36, 3), dtype=torch.uint8)
    views = model.make_views(windows, torch.Generator().manual_seed(1))
    assert torch.equal(views["reversed"], views["a"].flip(2))  # a, played backwards
    loss, logs = model(views)
    # the embeddings the loss saw: one training-mode pass over a, b and reversed (batch statistics)
    with torch.no_grad():
        z_train = model.encode(torch.cat([views["a"], views["b"], views["reversed"]]), ("clip",))["clip"]
    z_a, z_b, z_rev = z_train.split(4)
    expected = naive_loss(z_a, z_b, z_rev[:, None], model.cfg.temperature)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)


def test_coupled_without_hard_negatives_is_unchanged_and_bad_names_are_refused():
    torch.manual_seed(0)
    model = Coupled(CoupledConfig())
    views = model.make_views(torch.randint(0, 256, (4, 2, 8, 36, 36, 3), dtype=torch.uint8),
                             torch.Generator().manual_seed(1))
    assert set(views) == {"a", "b"}
    loss, _ = model(views)
    with torch.no_grad():
        z_a, z_b = model.encode(torch.cat([views["a"], views["b"]]), ("clip",))["clip"].split(4)
    torch.testing.assert_close(loss.detach(), naive_loss(z_a, z_b, [[] for _ in range(4)], model.cfg.temperature),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError):
        load_config(None, ["method=coupled", "model.extra_hard_negatives=[sideways]"])
