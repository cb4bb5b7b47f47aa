"""HDC's readings (results/hdc_readings.md): the SC pair of each reading, the detached SC heads, the
level-wise invariance weighting and the gradient-conflict diagnostic, each against a naive
reference or a property."""
import math

import numpy as np
import pytest
import torch

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.experiment import run_config_from_dict, saved_run_config
from hdc_lib.hdc import HDC, HDCConfig, subtask_gradient_cosine
from hdc_lib.views import SC_PAIRS, hdc_views, shared_frames

SIZE = 16


def windows(k, batch=3, frames=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, k, frames, 24, 24, 3), generator=generator, dtype=torch.uint8)


def augment():
    return SpatialAugment(AugmentConfig(size=SIZE))


def test_third_window_pairs_v1_with_window_c_in_v1s_appearance():
    """E2: v4 = S(c; theta1), replayed by hand; v3 = S(b; theta1) stays TC's hard negative."""
    w, aug = windows(3), augment()
    views = hdc_views(w, aug, torch.Generator().manual_seed(0), sc_pair="third_window")
    torch.testing.assert_close(views["v4"], aug(w[:, 2], params=views["theta1"])[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(views["v3"], aug(w[:, 1], params=views["theta1"])[0], atol=1e-6, rtol=0)
    w[:, 2] = w[:, 0]  # window c = window a: SC's pair is then one clip twice
    same = hdc_views(w, aug, torch.Generator().manual_seed(0), sc_pair="third_window")
    assert torch.equal(same["v1"], same["v4"])


def test_independent_appearance_draws_a_third_transform_for_window_b():
    """E3: v4 = S(b; theta3) with theta3 drawn apart from theta1 and theta2."""
    w, aug = windows(2), augment()
    views = hdc_views(w, aug, torch.Generator().manual_seed(0), sc_pair="independent_appearance")
    torch.testing.assert_close(views["v4"], aug(w[:, 1], params=views["theta3"])[0], atol=1e-6, rtol=0)
    for other in ("theta1", "theta2"):
        assert not torch.equal(views["theta3"].top, views[other].top) or \
            not torch.equal(views["theta3"].sigma, views[other].sigma)
    assert not torch.allclose(views["v4"], views["v3"])


def test_order_destroyed_permutes_whole_frames_of_v2_and_v3():
    """E4: the SC pair is v2 and v3 with their frames in a non-identity order, frames intact."""
    views = hdc_views(windows(2, frames=5), augment(), torch.Generator().manual_seed(0), sc_pair="order_destroyed")
    for name in ("v2", "v3"):
        clip, shuffled = views[name], views[f"{name}_shuffled"]
        for i in range(clip.shape[0]):
            originals = [clip[i, :, t] for t in range(clip.shape[2])]
            order = [next(t for t, f in enumerate(originals) if torch.equal(f, shuffled[i, :, s]))
                     for s in range(clip.shape[2])]
            assert sorted(order) == list(range(clip.shape[2])) and order != list(range(clip.shape[2]))


def test_the_default_reading_draws_as_the_first_reading_did():
    """E0 takes the same random draws as before the readings existed: two parameter sets."""
    w, aug = windows(2), augment()
    views = hdc_views(w, aug, torch.Generator().manual_seed(3))
    theta = aug.sample_params(6, 24, 24, generator=torch.Generator().manual_seed(3))
    assert torch.equal(views["theta1"].sigma, theta[:3].sigma) and torch.equal(views["theta2"].sigma, theta[3:].sigma)


def test_shared_frames_counts_like_a_set_intersection():
    """On the toy's own sampler (8 frames at stride 2, windows 2-8 frames apart in a 32-frame video)."""
    sampler = RandomClipSampler(8, 2, num_clips=2, offset=(2, 8))
    rng = np.random.default_rng(0)
    indices = torch.as_tensor(np.stack([sampler(32, rng) for _ in range(200)]))
    expected = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(indices[:, 0], indices[:, 1])]
    assert shared_frames(indices).tolist() == expected
    assert max(expected) >= 4  # v3 does share frames with v1


def model(**kw):
    torch.manual_seed(0)
    return HDC(HDCConfig(augment=AugmentConfig(size=SIZE), clip_frames=4, **kw)).train()


def views_for(m, seed=1):
    k = m.clip_request()["num_clips"]
    return m.make_views(windows(k, batch=4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sc_pair", list(SC_PAIRS))
def test_every_reading_trains_sc_on_its_pair(sc_pair):
    """Each reading asks for its windows, trains, and measures SC's invariance on its own pair."""
    m = model(levels=("layer4",), weighting="uniform", sc_pair=sc_pair)
    assert m.clip_request()["num_clips"] == (3 if sc_pair == "third_window" else 2)
    loss, logs = m(views_for(m))
    assert torch.isfinite(loss) and "loss/spatial_layer4" in logs
    p, r = SC_PAIRS[sc_pair]
    z, _ = m.embeddings(views_for(m), step=False)
    q = z["spatial_layer4"]
    expected = torch.nn.functional.cosine_similarity(q[p], q[r], dim=1).mean()
    _, cosines = m.term_losses(z, z, {})
    assert cosines[m.terms.index("spatial_layer4")].item() == pytest.approx(expected.item(), abs=1e-6)


def test_detached_sc_sends_no_gradient_into_the_backbone():
    for detach in (True, False):
        m = model(levels=("layer4",), weighting="uniform", sc_pair="third_window", sc_detach=detach)
        losses, _ = m.term_losses(*m.embeddings(views_for(m), step=False), logs={})
        losses[m.terms.index("spatial_layer4")].backward()
        backbone = [p.grad for p in m.backbone.parameters() if p.grad is not None]
        heads = [p.grad for p in m.online["heads"]["spatial_layer4"].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in heads)
        moved = any(g.abs().sum() > 0 for g in backbone)
        assert moved is not detach


def test_level_weights_hand_worked():
    """Two TC levels with iota 0.95 and 0.96 at t = 0.01: weights 2/(1+e) and 2e/(1+e)."""
    m = model(subtasks=("temporal",), levels=("layer3", "layer4"), weighting="invariance_levels")
    m.invariance.copy_(torch.tensor([0.95, 0.96]))
    e = math.e
    torch.testing.assert_close(m.level_weights(), torch.tensor([2 / (1 + e), 2 * e / (1 + e)]))


def test_level_weights_keep_each_subtasks_total_and_order():
    m = model(levels=("layer2", "layer3", "layer4"), weighting="invariance_levels", weight_temperature=0.05)
    iota = torch.tensor([0.97, 0.90, 0.95, 0.93, 0.99, 0.96])  # terms: S2 T2 S3 T3 S4 T4
    m.invariance.copy_(iota)
    w = m.level_weights()
    for subtask in ("spatial", "temporal"):
        rows = [j for j, t in enumerate(m.terms) if t.startswith(subtask)]
        assert w[rows].sum().item() == pytest.approx(3.0)
        assert torch.equal(w[rows].argsort(), iota[rows].argsort())  # more invariant, more weight
    # the weights of two levels differ by exp(delta iota / t), whatever the other levels hold
    assert (w[4] / w[0]).item() == pytest.approx(math.exp((0.99 - 0.97) / 0.05), rel=1e-5)


def test_gradient_cosine_matches_two_separate_backward_passes():
    """The diagnostic against a naive reference: each subtask's loss backpropagated on its own
    into a fresh copy, the two backbone gradients compared with numpy."""
    m = model(levels=("layer4",), weighting="uniform")
    views = views_for(m)
    got = subtask_gradient_cosine(m, views)["layer4"]
    grads = []
    for subtask in ("spatial", "temporal"):
        fresh = model(levels=("layer4",), weighting="uniform")
        losses, _ = fresh.term_losses(*fresh.embeddings(views, step=False), logs={})
        losses[fresh.terms.index(f"{subtask}_layer4")].backward()
        grads.append(np.concatenate([(p.grad if p.grad is not None else torch.zeros_like(p)).numpy().ravel()
                                     for p in fresh.backbone.parameters()]))
    expected = grads[0] @ grads[1] / (np.linalg.norm(grads[0]) * np.linalg.norm(grads[1]))
    assert got == pytest.approx(float(expected), abs=1e-4)
    detached = model(levels=("layer4",), weighting="uniform", sc_detach=True)
    assert subtask_gradient_cosine(detached, views_for(detached))["layer4"] == 0.0


@pytest.mark.parametrize("model_section, message", [
    ({"subtasks": ["temporal"], "sc_pair": "third_window"}, "sc_pair"),
    ({"subtasks": ["temporal"], "sc_detach": True}, "sc_pair"),
    ({"subtasks": ["spatial"], "tc_hard_negative": False}, "tc_hard_negative"),
    ({"weighting": "invariance", "weight_temperature": 0.1}, "weight_temperature"),
    ({"sc_pair": "sideways"}, "sc_pair"),
])
def test_a_knob_the_configuration_would_ignore_is_an_error(model_section, message):
    with pytest.raises(ValueError, match=message):
        run_config_from_dict({"method": "hdc", "model": model_section})


def test_records_made_before_the_readings_read_as_the_first_reading():
    old_hdc = {"method": "hdc", "model": {"levels": ["layer4"]}}
    assert saved_run_config(old_hdc).model.sc_pair == "same_appearance"
    old_tc = {"method": "hdc", "model": {"subtasks": ["temporal"]}}
    assert saved_run_config(old_tc).model.sc_pair is None
