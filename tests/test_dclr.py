"""DCLR's pieces against explicit maths, and the method's gradient and key-alignment properties."""
import pytest
import torch

from hdc_lib import dclr
from hdc_lib.augment import AugmentConfig
from hdc_lib.dclr import (DCLR, DCLRConfig, activation_map, activation_pool, alignment_loss, dynamic_clip,
                          normalised_map, static_clip)

# Crop = whole frame, no flip, no colour change: the augmentation reduces to resize + normalise.
FIXED_AUGMENT = AugmentConfig(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0,
                              jitter_p=0.0, gray_p=0.0, blur_p=0.0)


def random_windows(batch=3, length=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 2, length, size, size, 3), generator=g, dtype=torch.uint8)


def test_static_clip_repeats_the_chosen_raw_frame():
    window = random_windows()[:, 0]
    index = torch.tensor([0, 5, 7])
    clip = static_clip(window, index, num_frames=4)
    assert clip.shape == (3, 4, 16, 16, 3)
    for b in range(3):
        for t in range(4):
            assert torch.equal(clip[b, t], window[b, index[b]])


@pytest.mark.parametrize("circular", [True, False])
def test_dynamic_clip_is_the_frame_difference(circular):
    v = torch.randn(2, 3, 5, 4, 4)
    d = dynamic_clip(v, circular=circular)
    for t in range(1, 5):
        torch.testing.assert_close(d[:, :, t], v[:, :, t] - v[:, :, t - 1])
    expected_first = v[:, :, 0] - v[:, :, 4] if circular else torch.zeros_like(v[:, :, 0])
    torch.testing.assert_close(d[:, :, 0], expected_first)


def test_activation_map_is_channel_sum_and_non_negative_after_relu():
    f = torch.relu(torch.randn(2, 6, 2, 3, 3))
    a = activation_map(f)
    assert a.shape == (2, 2, 3, 3) and (a >= 0).all()
    torch.testing.assert_close(a[1, 0, 2, 1], f[1, :, 0, 2, 1].sum())


def test_activation_pool_equals_explicit_weighted_mean():
    f = torch.randn(2, 4, 2, 3, 3, dtype=torch.float64)
    a = torch.rand(2, 2, 3, 3, dtype=torch.float64)
    pooled = activation_pool(f, a)
    for b in range(2):
        num = torch.zeros(4, dtype=torch.float64)
        den = 0.0
        for t in range(2):
            for y in range(3):
                for x in range(3):
                    num += f[b, :, t, y, x] * a[b, t, y, x]
                    den += a[b, t, y, x]
        torch.testing.assert_close(pooled[b], num / den)


def test_activation_pool_of_an_empty_map_is_the_plain_average():
    f = torch.randn(1, 4, 2, 3, 3)
    torch.testing.assert_close(activation_pool(f, torch.zeros(1, 2, 3, 3)), f.mean(dim=(2, 3, 4)))


def test_views_follow_the_static_dynamic_split():
    model = DCLR(DCLRConfig(augment=FIXED_AUGMENT, clip_frames=4, clip_stride=2))
    windows = random_windows(length=8)
    views = model.make_views(windows, generator=torch.Generator().manual_seed(1))
    # v is the stride-2 subsample of the window: with a deterministic augmentation it equals the
    # augmentation of exactly those frames.
    expected_v = model.augment.center(windows[:, 0, ::2], crop_fraction=1.0)
    torch.testing.assert_close(views["v1"], expected_v)
    # s is one frame repeated over time; d is v's circular difference.
    s = views["s1"]
    assert torch.equal(s, s[:, :, :1].expand_as(s))
    torch.testing.assert_close(views["d2"], dynamic_clip(views["v2"]))
    assert views["v1"].shape == views["s1"].shape == views["d1"].shape == (3, 3, 4, 16, 16)


def test_static_view_equals_augmenting_every_repeated_frame():
    """make_views augments the static frame once; that must equal augmenting the T-frame static clip
    with the same parameters (the random draws do not depend on the clip length)."""
    model = DCLR(DCLRConfig(augment=AugmentConfig(size=16), clip_frames=4, clip_stride=2))
    windows = random_windows(length=8)
    views = model.make_views(windows, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    frame_index = torch.randint(8, (windows.shape[0],), generator=generator)
    for j in (1, 2):
        model.augment(windows[:, j - 1, ::2], generator=generator)
        expected, _ = model.augment(static_clip(windows[:, j - 1], frame_index, 4), generator=generator)
        torch.testing.assert_close(views[f"s{j}"], expected)


def test_maps_carry_no_gradient_and_rgb_features_do(monkeypatch):
    """Pooling must get detached maps (no gradient through A_s, A_d) and RGB features with gradient."""
    seen = []
    original = dclr.activation_pool

    def recording_pool(feature_map, amap):
        seen.append((feature_map.requires_grad, amap.requires_grad))
        return original(feature_map, amap)

    monkeypatch.setattr(dclr, "activation_pool", recording_pool)
    for queue_size in (0, 6):
        model = DCLR(DCLRConfig(augment=FIXED_AUGMENT, clip_frames=4, queue_size=queue_size))
        loss, _ = model(model.make_views(random_windows(), torch.Generator().manual_seed(0)))
        loss.backward()
    query_calls = [s for s in seen if s[0]]
    assert query_calls, "the query pass must pool RGB features that carry gradient"
    assert all(not amap_grad for _, amap_grad in seen)


def test_key_maps_stay_with_their_keys_when_keys_are_shuffled():
    """The official code pools shuffled key features with unshuffled maps; ours must not. One
    shuffle group has the whole batch's BatchNorm statistics, so the shuffled keys must equal the
    keys of the plain pass (their maps pooled a permuted batch's features otherwise)."""
    model = DCLR(DCLRConfig(augment=FIXED_AUGMENT, clip_frames=4, queue_size=6, shuffle_bn_groups=1))
    views = model.make_views(random_windows(batch=3), torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    shuffled = model._keys(views["v2"], views["s2"], views["d2"])
    torch.manual_seed(1)
    assert not torch.equal(torch.randperm(3), torch.arange(3)), "the test needs a real permutation"
    model.cfg.shuffle_bn_groups = 0
    plain = model._keys(views["v2"], views["s2"], views["d2"])
    for name in plain:
        torch.testing.assert_close(shuffled[name], plain[name], atol=1e-5, rtol=1e-4)


def test_cross_video_positives_are_the_top_k_of_the_searches():
    model = DCLR(DCLRConfig(augment=FIXED_AUGMENT, clip_frames=4, queue_size=6, topk=2))
    for _ in range(2):  # two batches of 3 fill the queue of 6
        model(model.make_views(random_windows(), torch.Generator().manual_seed(0)))
    search = {"static": torch.nn.functional.normalize(torch.randn(3, 128), dim=1),
              "dynamic": torch.nn.functional.normalize(torch.randn(3, 128), dim=1)}
    masks = model._cross_video_positives(search)
    sim_s = search["static"] @ model.queue["sv"].t()
    sim_d = search["dynamic"] @ model.queue["dv"].t()
    for row in range(3):
        assert set(masks["static"][row].nonzero().flatten().tolist()) == set(sim_s[row].topk(2).indices.tolist())
        assert set(masks["dynamic"][row].nonzero().flatten().tolist()) == set(sim_d[row].topk(2).indices.tolist())
        both = torch.softmax(sim_s[row], 0) + torch.softmax(sim_d[row], 0)
        assert set(masks["both"][row].nonzero().flatten().tolist()) == set(both.topk(2).indices.tolist())


def test_no_cross_video_positives_before_the_queue_is_full():
    model = DCLR(DCLRConfig(augment=FIXED_AUGMENT, clip_frames=4, queue_size=6))
    search = {"static": torch.randn(3, 128), "dynamic": torch.randn(3, 128)}
    assert model._cross_video_positives(search) == {}


def test_normalised_map_has_mean_one_whatever_the_scale():
    a = torch.rand(4, 2, 3, 3, dtype=torch.float64)
    hat = normalised_map(a)
    for b in range(4):
        torch.testing.assert_close(hat[b], a[b].flatten() / (a[b].sum() / a[b].numel()))
    torch.testing.assert_close(hat.mean(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(normalised_map(7.0 * a), hat)
    assert torch.equal(normalised_map(torch.zeros(1, 2, 3, 3)), torch.zeros(1, 18))


def test_alignment_loss_equals_a_loop_and_is_order_one_for_random_maps():
    g = torch.Generator().manual_seed(0)
    a_v, a_s, a_d = (torch.rand(64, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    expected = 0.0
    for b in range(64):
        v_hat = a_v[b].flatten() / a_v[b].mean()
        sd = (a_s[b] + a_d[b]).flatten()
        sd_hat = sd / sd.mean()
        expected += sum(float(v_hat[p] - sd_hat[p]) ** 2 for p in range(32)) / 32
    loss = alignment_loss(a_v, a_s, a_d)
    assert loss.item() == pytest.approx(expected / 64, rel=1e-9)
    # Independent uniform maps: Var(U / E U) + Var((U1 + U2) / E(U1 + U2)) = 1/3 + 1/6.
    assert loss.item() == pytest.approx(0.5, abs=0.05)
    # The same value on 7x7 maps (the paper's size) and for any scale of the activations.
    a_v, a_s, a_d = (torch.rand(64, 2, 7, 7, generator=g, dtype=torch.float64) for _ in range(3))
    assert alignment_loss(a_v, 3 * a_s, 3 * a_d).item() == pytest.approx(0.5, abs=0.05)


def test_alignment_gradient_moves_the_maps():
    """A few optimiser steps on the alignment term alone bring Â_v and Â_{s+d} together."""
    torch.manual_seed(0)
    model = DCLR(DCLRConfig(augment=FIXED_AUGMENT, clip_frames=4))
    views = model.make_views(random_windows(batch=4), torch.Generator().manual_seed(0))
    optimiser = torch.optim.Adam(model.backbone.parameters(), lr=1e-2)
    values = []
    for _ in range(8):
        f_v, f_s, f_d = model._modes(model.online, views["v1"], views["s1"], views["d1"])
        align = alignment_loss(*(activation_map(f) for f in (f_v, f_s, f_d)))
        optimiser.zero_grad()
        align.backward()
        optimiser.step()
        values.append(align.item())
    assert values[-1] < 0.5 * values[0], values


def test_alignment_term_is_logged_and_weighted():
    torch.manual_seed(0)
    model = DCLR(DCLRConfig(augment=FIXED_AUGMENT, clip_frames=4))
    _, logs = model(model.make_views(random_windows(), torch.Generator().manual_seed(0)))
    total = logs["loss/contrast"] + 0.1 * logs["loss/align"]
    torch.testing.assert_close(logs["loss/total"], total)
    assert logs["loss/align"] >= 0
