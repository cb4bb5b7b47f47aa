"""The three methods: the shared contrast against naive maths, HDC's terms and weights, and every
method on every backbone at two clip sizes, learning on a fixed batch."""
import math

import pytest
import torch
import torch.nn.functional as F

from hdc_lib.augment import AugmentConfig
from hdc_lib.config import from_dict
from hdc_lib.coupled import Coupled, CoupledConfig
from hdc_lib.dclr import DCLR, DCLRConfig
from hdc_lib.hdc import HDC, HDCConfig

METHODS = {"coupled": (Coupled, CoupledConfig), "hdc": (HDC, HDCConfig), "dclr": (DCLR, DCLRConfig)}


def windows_for(model, batch=4, size=20, seed=0):
    request = model.clip_request()
    g = torch.Generator().manual_seed(seed)
    shape = (batch, request["num_clips"], request["num_frames"] * request["stride"], size, size, 3)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def build(name, **overrides):
    model_cls, cfg_cls = METHODS[name]
    overrides.setdefault("augment", {"size": 16, "scale": [0.5, 1.0]})
    overrides.setdefault("clip_frames", 4)
    return model_cls(from_dict(cfg_cls, overrides))


# -- the shared contrast -----------------------------------------------------------------------
def naive_contrast(query, key, temperature, bank=None, hard=None, extra=None):
    """-log(sum_pos exp(s/tau) / sum_all exp(s/tau)) row by row, in float64."""
    query = F.normalize(query.double(), dim=1)
    key = F.normalize(key.double(), dim=1)
    total = 0.0
    for i in range(query.shape[0]):
        sims = [float(query[i] @ key[j]) for j in range(key.shape[0])]
        positive = [j == i for j in range(key.shape[0])]
        if bank is not None:
            b = F.normalize(bank.double(), dim=1)
            sims += [float(query[i] @ b[m]) for m in range(b.shape[0])]
            positive += [bool(extra[i, m]) if extra is not None else False for m in range(b.shape[0])]
        if hard is not None:
            h = F.normalize(hard.double(), dim=-1)
            sims += [float(query[i] @ h[i, m]) for m in range(h.shape[1])]
            positive += [False] * h.shape[1]
        exps = [math.exp(s / temperature) for s in sims]
        total += -math.log(sum(e for e, p in zip(exps, positive) if p) / sum(exps))
    return total / query.shape[0]


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_contrast_matches_naive_loop_with_queue_hard_negatives_and_extra_positives(temperature):
    model = build("coupled", queue_size=8, temperature=temperature)
    torch.manual_seed(0)
    model.queue.enqueue(clip=torch.randn(8, 128))
    q, k, hard = torch.randn(4, 128), torch.randn(4, 128), torch.randn(4, 2, 128)
    extra = torch.rand(4, 8) > 0.7
    logs = {}
    loss = model.contrast("t", [(q, k)], logs, queue="clip", hard_negatives=hard, extra_positives=extra)
    expected = naive_contrast(q, k, temperature, model.queue["clip"], hard, extra)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert set(logs) == {"loss/t", "acc/t", "pos_sim/t", "neg_sim/t"}


def test_symmetric_contrast_is_the_mean_of_both_directions():
    model = build("coupled")
    a, b = torch.randn(5, 128), torch.randn(5, 128)
    loss = model.contrast("t", [(a, b), (b, a)], {})
    expected = 0.5 * (naive_contrast(a, b, 0.1) + naive_contrast(b, a, 0.1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# -- HDC ---------------------------------------------------------------------------------------
def test_hdc_terms_follow_levels_and_subtasks():
    assert build("hdc").terms == ["spatial_layer2", "temporal_layer2", "spatial_layer3",
                                  "temporal_layer3", "spatial_layer4", "temporal_layer4"]
    assert build("hdc", levels=["layer4"]).terms == ["spatial_layer4", "temporal_layer4"]
    assert build("hdc", subtasks=["temporal"], levels=["layer3", "layer4"]).terms == [
        "temporal_layer3", "temporal_layer4"]
    with pytest.raises(ValueError, match="subtasks"):
        build("hdc", subtasks=["spatio"])


def test_hdc_sc_only_encodes_only_the_views_it_needs():
    model = build("hdc", subtasks=["spatial"])
    assert model._needed_views() == ["v1", "v3"]
    model = build("hdc", subtasks=["temporal"], tc_hard_negative=False, extra_hard_negatives=["reversed"])
    assert model._needed_views() == ["v1", "v2", "reversed"]


def test_invariance_weights_follow_the_formula():
    model = build("hdc", levels=["layer3", "layer4"])
    views = model.make_views(windows_for(model), torch.Generator().manual_seed(0))
    _, logs = model(views)  # first step: iota = measured invariance
    first = torch.stack([logs[f"invariance/{t}"] for t in model.terms])
    _, logs = model(views)
    # Recompute the second measurement from the logged cosine: iota = 0.9 iota_prev + 0.1 (1 + cos)/2.
    with torch.no_grad():
        z = model._encode_views(views, momentum=False)
    measured = torch.stack([(1 + F.cosine_similarity(z[t]["v1"], z[t]["v3" if t.startswith("spatial") else "v2"]).mean()) / 2
                            for t in model.terms])
    iota = torch.stack([logs[f"invariance/{t}"] for t in model.terms])
    # BatchNorm running statistics moved between the passes only in buffers, not in outputs.
    torch.testing.assert_close(iota, 0.9 * first + 0.1 * measured, atol=1e-5, rtol=1e-5)
    weights = torch.stack([logs[f"weight/{t}"] for t in model.terms])
    torch.testing.assert_close(weights, len(model.terms) * iota / iota.sum())
    assert weights.sum().item() == pytest.approx(len(model.terms))
    assert ((iota >= 0) & (iota <= 1)).all()


@pytest.mark.parametrize("weighting", ["uniform", "invariance", "learned"])
def test_total_loss_is_the_weighted_sum_of_the_terms(weighting):
    model = build("hdc", weighting=weighting, levels=["layer3", "layer4"])
    loss, logs = model(model.make_views(windows_for(model), torch.Generator().manual_seed(0)))
    terms = torch.stack([logs[f"loss/{t}"] for t in model.terms])
    weights = torch.stack([logs[f"weight/{t}"] for t in model.terms])
    expected = (weights * terms).sum()
    if weighting == "learned":
        expected = expected + model.log_variance.sum()
    if weighting == "uniform":
        assert torch.equal(weights, torch.ones_like(weights))
    torch.testing.assert_close(loss.detach(), expected)


def test_learned_log_variances_are_not_decayed():
    """The optimizer built by the engine decays the network but leaves s_j alone: with a zero
    gradient, an AdamW step must not move s_j."""
    from hdc_lib.experiment import OptimConfig, build_optimizer

    model = build("hdc", weighting="learned", levels=["layer4"])
    with torch.no_grad():
        model.log_variance.fill_(2.0)
    optimizer, _ = build_optimizer(OptimConfig(weight_decay=0.5, lr=0.1), model.trainable_parameters(), 1, 1)
    head = next(model.online["heads"].parameters())
    before = head.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.equal(model.log_variance.detach(), torch.full_like(model.log_variance, 2.0))
    assert not torch.equal(head.detach(), before)  # the rest is decayed
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.trainable_parameters()[0]["params"])) + 1


def test_temporal_hard_negative_adds_a_column_per_row():
    """With v3 as a hard negative the temporal loss can only grow (one more term in each denominator)."""
    torch.manual_seed(0)
    with_hard = build("hdc", subtasks=["temporal"], levels=["layer4"])
    without = build("hdc", subtasks=["temporal"], levels=["layer4"], tc_hard_negative=False)
    without.load_state_dict(with_hard.state_dict())
    # Eval mode: BatchNorm uses fixed statistics, so both see identical embeddings of v1 and v2.
    with_hard.eval()
    without.eval()
    views = with_hard.make_views(windows_for(with_hard), torch.Generator().manual_seed(0))
    _, logs_hard = with_hard(views)
    _, logs_plain = without(views)
    assert logs_hard["loss/temporal_layer4"] > logs_plain["loss/temporal_layer4"]


# -- every method, every backbone, two clip sizes ------------------------------------------------
@pytest.mark.parametrize("backbone", ["tiny", "r3d_18", "r2plus1d_18", "mc3_18"])
@pytest.mark.parametrize("name", ["coupled", "hdc", "dclr"])
def test_every_method_runs_on_every_backbone_at_two_clip_sizes(name, backbone):
    for frames, size in ((4, 16), (6, 24)):
        model = build(name, backbone=backbone, clip_frames=frames, augment={"size": size})
        views = model.make_views(windows_for(model, batch=2, size=size + 4), torch.Generator().manual_seed(0))
        loss, logs = model(views)
        assert torch.isfinite(loss)
        loss.backward()
        head_grads = [p.grad for p in model.online["heads"].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
        assert "loss/total" in logs


@pytest.mark.parametrize("name", ["coupled", "hdc", "dclr"])
@pytest.mark.parametrize("queue_size", [0, 8])
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(name, queue_size):
    torch.manual_seed(0)
    model = build(name, queue_size=queue_size, momentum=0.9)
    views = model.make_views(windows_for(model, batch=4), torch.Generator().manual_seed(0))
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, logs = model(views)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(logs["loss/total"].item())
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses


def test_momentum_encoder_follows_by_ema_and_is_not_trained():
    model = build("coupled", queue_size=8, momentum=0.5)
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    model.update_momentum_encoder()
    for b, k, q in zip(before, model.momentum_encoder.parameters(), model.online.parameters()):
        torch.testing.assert_close(k, 0.5 * b + 0.5 * q)


def test_unknown_stage_is_a_clear_error():
    with pytest.raises(ValueError, match="no stage 'layer9'"):
        build("coupled", level="layer9")


def test_speed_strides_reach_the_clip_request():
    assert build("hdc", speed_strides=[1, 2, 3]).clip_request()["stride"] == (1, 2, 3)
    assert build("hdc").clip_request()["stride"] == 2
    with pytest.raises(ValueError, match="speed_strides"):
        build("dclr", speed_strides=[1, 2])
