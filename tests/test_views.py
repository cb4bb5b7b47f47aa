"""Tests for hdc_lib.views: which views share frames and which share the spatial transform."""
import pytest
import torch

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.views import hdc_views, reverse_frames, shuffle_frames

SIZE = 24


def random_windows(batch=3, frames=2, height=32, width=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 2, frames, height, width, 3), generator=generator, dtype=torch.uint8)


def test_shapes_and_params():
    views = hdc_views(random_windows(), SpatialAugment(AugmentConfig(size=SIZE)), torch.Generator().manual_seed(0))
    for name in ("v1", "v2", "v3"):
        assert views[name].shape == (3, 3, 2, SIZE, SIZE) and views[name].dtype == torch.float32
    assert len(views["theta1"]) == len(views["theta2"]) == 3


def test_views_apply_the_documented_parameters():
    """v1 = S(a; theta1), v2 = S(a; theta2), v3 = S(b; theta1), sample by sample."""
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    windows = random_windows()
    views = hdc_views(windows, augment, torch.Generator().manual_seed(0))
    a, b = windows[:, 0], windows[:, 1]
    for name, clips, theta in [("v1", a, "theta1"), ("v2", a, "theta2"), ("v3", b, "theta1")]:
        torch.testing.assert_close(views[name], augment(clips, params=views[theta])[0], atol=1e-6, rtol=0)
    theta1, theta2 = views["theta1"], views["theta2"]
    assert not torch.equal(theta1.sigma, theta2.sigma)  # drawn independently
    assert not torch.allclose(views["v1"], views["v2"]) and not torch.allclose(views["v1"], views["v3"])


def test_v1_and_v3_share_the_spatial_transform():
    """With window b equal to window a, v3 = S(a; theta1) = v1 exactly."""
    windows = random_windows()
    windows[:, 1] = windows[:, 0]
    views = hdc_views(windows, SpatialAugment(AugmentConfig(size=SIZE)), torch.Generator().manual_seed(0))
    assert torch.equal(views["v1"], views["v3"])
    assert not torch.allclose(views["v1"], views["v2"])


def test_v1_and_v2_share_the_frames():
    """With every random choice pinned (full-frame crop, no flip, jitter, grey or blur), theta2 acts
    like theta1, so v2 = v1; v3 still differs because its frames do."""
    pinned = AugmentConfig(size=SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0,
                           blur_p=0.0)
    views = hdc_views(random_windows(), SpatialAugment(pinned), torch.Generator().manual_seed(0))
    assert torch.equal(views["v1"], views["v2"])
    assert not torch.allclose(views["v1"], views["v3"])


def test_deterministic_with_a_seeded_generator():
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    windows = random_windows()
    first = hdc_views(windows, augment, torch.Generator().manual_seed(5))
    second = hdc_views(windows, augment, torch.Generator().manual_seed(5))
    for name in ("v1", "v2", "v3"):
        assert torch.equal(first[name], second[name])


def test_rejects_windows_without_the_pair_axis():
    with pytest.raises(ValueError, match="views.py"):
        hdc_views(random_windows()[:, 0], SpatialAugment(AugmentConfig(size=SIZE)))


def frame_indexed(batch, frames):
    """(B, 1, T, 2, 2) clips whose every pixel holds its frame index."""
    return torch.arange(frames, dtype=torch.float32).view(1, 1, frames, 1, 1).expand(batch, 1, frames, 2, 2)


def test_shuffle_frames_is_never_identity_and_a_permutation():
    x = frame_indexed(600, 3)
    shuffled = shuffle_frames(x, generator=torch.Generator().manual_seed(0))
    orders = shuffled[:, 0, :, 0, 0]
    assert torch.equal(shuffled, orders.view(600, 1, 3, 1, 1).expand_as(x))  # whole frames move
    assert torch.equal(orders.sort(dim=1).values, torch.arange(3.0).expand(600, 3))
    assert not bool((orders == torch.arange(3.0)).all(dim=1).any())
    assert len({tuple(o) for o in orders.tolist()}) == 5  # all 3! - 1 other orders occur
    assert torch.equal(shuffle_frames(frame_indexed(50, 2))[:, 0, :, 0, 0], torch.tensor([1.0, 0.0]).expand(50, 2))
    assert torch.equal(shuffle_frames(frame_indexed(4, 1)), frame_indexed(4, 1))


def test_reverse_frames():
    assert torch.equal(reverse_frames(frame_indexed(2, 4))[0, 0, :, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))
