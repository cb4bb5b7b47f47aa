"""The three methods: the shared contrast against naive maths in each negatives mode, shuffle BN's
key pass against a loop over separately run groups, HDC's terms and weights, and every method on
every backbone at two clip sizes, learning on a fixed batch."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from hdc_lib.augment import AugmentConfig
from hdc_lib.config import from_dict
from hdc_lib.coupled import Coupled, CoupledConfig
from hdc_lib.dclr import DCLR, DCLRConfig
from hdc_lib.hdc import HDC, HDCConfig
from test_losses import naive_info_nce

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


# -- the shared contrast: the naive InfoNCE of test_losses.py, with the candidates each mode gives --
def naive_contrast(query, key, temperature, **candidates):
    in_float64 = {name: c.double() if torch.is_tensor(c) and c.is_floating_point() else c
                  for name, c in candidates.items()}
    return naive_info_nce(query.double(), key.double(), temperature, **in_float64).item()


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("negatives", ["queue", "both"])
def test_contrast_matches_naive_loop_with_queue_hard_negatives_and_extra_positives(temperature, negatives):
    model = build("coupled", queue_size=8, temperature=temperature, negatives=negatives)
    torch.manual_seed(0)
    model.queue.enqueue(clip=torch.randn(8, 128))
    q, k, hard = torch.randn(4, 128), torch.randn(4, 128), torch.randn(4, 2, 128)
    extra = torch.rand(4, 8) > 0.7
    for hard_negatives, extra_positives in ((None, None), (hard, None), (None, extra), (hard, extra)):
        logs = {}
        loss = model.contrast("t", [(q, k)], logs, queue="clip", hard_negatives=hard_negatives,
                              extra_positives=extra_positives)
        optional = {name: c for name, c in (("hard_negatives", hard_negatives), ("extra_positives", extra_positives))
                    if c is not None}
        expected = naive_contrast(q, k, temperature, batch_negatives=negatives == "both", queue=model.queue["clip"],
                                  **optional)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        assert set(logs) == {"loss/t", "acc/t", "pos_sim/t", "neg_sim/t"}


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_in_batch_contrast_matches_naive_loop_with_hard_negatives(temperature):
    model = build("coupled", temperature=temperature)
    assert model.cfg.negatives == "batch" and model.queue is None
    q, k, hard = torch.randn(5, 128), torch.randn(5, 128), torch.randn(5, 3, 128)
    assert model.contrast("t", [(q, k)], {}, queue="clip").item() == pytest.approx(
        naive_contrast(q, k, temperature), rel=1e-5)
    assert model.contrast("t", [(q, k)], {}, queue="clip", hard_negatives=hard).item() == pytest.approx(
        naive_contrast(q, k, temperature, hard_negatives=hard), rel=1e-5)


def test_queue_only_negatives_ignore_the_other_keys_of_the_batch():
    """MoCo v2: query 0's gradient (row 0 of the loss) does not see the other rows' keys; with
    "both" it does."""
    q, k = torch.randn(4, 128), torch.randn(4, 128)
    moved = k.clone()
    moved[1:] = q[:1]  # the other keys become copies of query 0
    for negatives, other_keys_matter in (("queue", False), ("both", True)):
        model = build("coupled", queue_size=8, negatives=negatives)
        grads = []
        for keys in (k, moved):
            query = q.clone().requires_grad_()
            model.contrast("t", [(query, keys)], {}, queue="clip").backward()
            grads.append(query.grad[0])
        assert (not torch.allclose(*grads)) == other_keys_matter


def test_negatives_and_shuffle_bn_follow_the_queue():
    assert build("coupled").cfg.negatives == "batch"
    assert build("coupled", queue_size=8).cfg.negatives == "queue"
    for bad, message in (({"negatives": "queue"}, "needs a queue"),
                         ({"negatives": "both"}, "needs a queue"),
                         ({"queue_size": 8, "negatives": "batch"}, "reads no queue"),
                         ({"shuffle_bn_groups": 2}, "only a queue has"),
                         ({"queue_size": 8, "shuffle_bn_groups": -1}, ">= 0")):
        with pytest.raises(ValueError, match=message):
            build("dclr", **bad)


def test_a_preset_batch_that_the_shuffle_groups_do_not_divide_is_a_config_error():
    from hdc_lib.config import ConfigError
    from hdc_lib.experiment import load_config

    with pytest.raises(ConfigError, match="shuffle_bn_groups=8 must divide"):
        load_config("configs/ucf101/hdc_r2plus1d.yaml", ["train.batch_size=4"])
    assert load_config("configs/ucf101/hdc_r2plus1d.yaml", ["train.batch_size=16"]).model.shuffle_bn_groups == 8


def test_sync_bn_with_shuffle_bn_is_a_config_error_and_each_alone_is_not():
    """SyncBatchNorm pools the key pass's statistics over every GPU, which is what shuffle BN
    prevents: a config asking for both is refused, naming both keys."""
    from hdc_lib.config import ConfigError
    from hdc_lib.experiment import load_config

    with pytest.raises(ConfigError, match=r"train.sync_bn=true undoes model.shuffle_bn_groups=8"):
        load_config("configs/ucf101/hdc_r2plus1d.yaml", ["train.sync_bn=true"])
    assert load_config("configs/ucf101/hdc_r2plus1d.yaml", ["train.sync_bn=true", "model.shuffle_bn_groups=0"]).train.sync_bn
    assert not load_config("configs/ucf101/hdc_r2plus1d.yaml").train.sync_bn


# -- shuffle BN ----------------------------------------------------------------------------------
def key_pass(model, views):
    """The method's momentum-encoder key pass, flattened to {name: (B, D)}."""
    if isinstance(model, Coupled):
        return model.momentum_keys(partial(model._embed, momentum=True), views["a"], views["b"])
    if isinstance(model, HDC):
        nested = model._encode_views(views, momentum=True)
        return {f"{term}/{view}": z for term, by_view in nested.items() for view, z in by_view.items()}
    return model._keys(views["v2"], views["s2"], views["d2"])


def subset(views, index):
    return {name: v[index] for name, v in views.items()}


@pytest.mark.parametrize("name", ["coupled", "hdc", "dclr"])
def test_shuffle_bn_keys_equal_a_loop_over_separately_normalised_groups(name):
    """Keys with G groups = the plain key pass run on each group of the permutation alone."""
    model = build(name, queue_size=16, shuffle_bn_groups=4, levels=["layer3", "layer4"]) if name == "hdc" else \
        build(name, queue_size=16, shuffle_bn_groups=4)
    views = model.make_views(windows_for(model, batch=8), torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    keys = key_pass(model, views)
    torch.manual_seed(7)
    permutation = torch.randperm(8)  # the draw the shuffle made
    model.cfg.shuffle_bn_groups = 0
    expected = {n: torch.empty_like(z) for n, z in keys.items()}
    for group in permutation.view(4, 2):
        for n, z in key_pass(model, subset(views, group)).items():
            expected[n][group] = z
    whole_batch = key_pass(model, views)
    for n in keys:
        torch.testing.assert_close(keys[n], expected[n], atol=1e-5, rtol=1e-4)
        # The groups' statistics differ from the whole batch's: the grouping is not a no-op.
        assert not torch.allclose(keys[n], whole_batch[n], atol=1e-3)


def test_with_shuffle_bn_a_key_depends_only_on_the_videos_of_its_group():
    """The leak, measured: perturbing one video's clips moves every key of a whole-batch key pass
    (BatchNorm shares statistics over the batch, the query's batch included), but with shuffle BN
    only the keys of the videos in that video's random group, and which videos those are changes
    with the permutation."""
    model = build("coupled", queue_size=16, shuffle_bn_groups=4)
    views = model.make_views(windows_for(model, batch=8), torch.Generator().manual_seed(0))
    perturbed = {n: v.clone() for n, v in views.items()}
    perturbed["a"][3] += 0.5 * torch.randn_like(perturbed["a"][3])
    perturbed["b"][3] += 0.5 * torch.randn_like(perturbed["b"][3])

    def changed_keys(seed):
        torch.manual_seed(seed)
        before = key_pass(model, views)["b"]
        torch.manual_seed(seed)
        after = key_pass(model, perturbed)["b"]
        return {i for i in range(8) if not torch.allclose(before[i], after[i], atol=1e-6)}

    group_mates = []
    for seed in range(4):
        changed = changed_keys(seed)
        torch.manual_seed(seed)
        groups = torch.randperm(8).view(4, 2)
        own_group = next(set(g.tolist()) for g in groups if 3 in g)
        assert changed == own_group, (seed, changed, own_group)
        group_mates.append(own_group - {3})
    assert len({frozenset(m) for m in group_mates}) > 1, "the permutation must change between steps"
    model.cfg.shuffle_bn_groups = 0
    assert changed_keys(0) == set(range(8))


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
def test_total_loss_equals_the_terms_assembled_from_the_definition(weighting):
    """HDC's loss on a first step against docs/methods.md's definition, assembled here from the
    model's embeddings with the naive InfoNCE: at each level SC contrasts (v1, v3) and TC (v1, v2)
    with v3 as a hard negative, each the mean of both directions; the weights are 1 (uniform),
    n iota_j / sum_m iota_m with iota_j = (1 + mean cosine of term j's positive pair) / 2
    (invariance; the first step's EMA is the measurement), or exp(-s_j), plus s_j (learned)."""
    model = build("hdc", weighting=weighting, levels=["layer3", "layer4"])
    log_variance = torch.tensor([0.5, -0.3, 0.2, 0.0])
    if weighting == "learned":
        with torch.no_grad():
            model.log_variance.copy_(log_variance)
    views = model.make_views(windows_for(model), torch.Generator().manual_seed(0))
    loss, _ = model(views)
    with torch.no_grad():  # training mode: the same batch statistics as the step's pass
        z = model._encode_views(views, momentum=False)
    terms, iota = [], []
    for term in model.terms:
        e = z[term]
        if term.startswith("spatial"):
            terms.append((naive_contrast(e["v1"], e["v3"], 0.1) + naive_contrast(e["v3"], e["v1"], 0.1)) / 2)
            positives = e["v1"], e["v3"]
        else:
            hard = e["v3"][:, None]
            terms.append((naive_contrast(e["v1"], e["v2"], 0.1, hard_negatives=hard)
                          + naive_contrast(e["v2"], e["v1"], 0.1, hard_negatives=hard)) / 2)
            positives = e["v1"], e["v2"]
        iota.append((1 + F.cosine_similarity(*positives).mean().item()) / 2)
    terms, iota = torch.tensor(terms), torch.tensor(iota)
    weights = {"uniform": torch.ones(4), "invariance": 4 * iota / iota.sum(), "learned": torch.exp(-log_variance)}
    expected = (weights[weighting] * terms).sum() + (log_variance.sum() if weighting == "learned" else 0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


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


# A fixed batch refills the queue with its own videos, so with queue-only negatives their older
# keys would be negatives of themselves: the queue case keeps the in-batch negatives ("both").
@pytest.mark.parametrize("name", ["coupled", "hdc", "dclr"])
@pytest.mark.parametrize("queue", [{"queue_size": 0}, {"queue_size": 8, "negatives": "both", "shuffle_bn_groups": 2}])
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(name, queue):
    torch.manual_seed(0)
    model = build(name, momentum=0.9, **queue)
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


@pytest.mark.parametrize("name", ["coupled", "hdc", "dclr"])
def test_moco_v2_steps_with_shuffle_bn_train_the_online_encoder_and_fill_the_queue(name):
    model = build(name, queue_size=8, shuffle_bn_groups=2, momentum=0.9)
    assert model.cfg.negatives == "queue"
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    key_weights = [p.clone() for p in model.momentum_encoder.parameters()]
    for step in range(3):  # the third step reads a full queue (DCLR: with cross-video positives)
        views = model.make_views(windows_for(model, batch=4, seed=step), torch.Generator().manual_seed(step))
        loss, logs = model(views)
        optimiser.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.backbone.parameters())
        optimiser.step()
    assert model.queue.is_full and int(model.queue.pointer) == 4
    assert all(not torch.equal(b, p) for b, p in zip(key_weights, model.momentum_encoder.parameters()))


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
