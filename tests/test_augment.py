"""Tests for hdc_lib.augment: the batched augmentation against torchvision.transforms.v2 applied
clip by clip with the same parameters, parameter statistics, reuse, determinism, temporal ops."""
import dataclasses
import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from hdc_lib.augment import AugmentConfig, AugmentParams, SpatialAugment

SIZE = 32
# Outputs compared in [0, 1] units (mean 0, std 1) unless the test normalises.
ATOL = 1e-4
NO_NORM = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
ONLY_CROP = dict(size=SIZE, flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, **NO_NORM)
NO_JITTER_OPS = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
TV_ADJUST = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
             "saturation": TF.adjust_saturation, "hue": TF.adjust_hue}

# (B, T, H, W): square, non-square, and frames smaller than the output (every crop upsamples).
SHAPES = [(1, 2, 40, 40), (3, 3, 48, 64), (4, 2, 20, 28)]
# One op switched on at a time, then the whole pipeline.
CONFIGS = {
    "crop": dict(ONLY_CROP),
    "crop_no_antialias": dict(ONLY_CROP, antialias=False),
    "flip": dict(ONLY_CROP, flip_p=1.0),
    **{op: dict(ONLY_CROP, jitter_p=1.0, **dict(NO_JITTER_OPS, **{op: AugmentConfig.__dataclass_fields__[op].default}))
       for op in JITTER_OPS},
    "jitter_all_orders": dict(ONLY_CROP, jitter_p=1.0),
    "gray": dict(ONLY_CROP, gray_p=1.0),
    "blur": dict(ONLY_CROP, blur_p=1.0),
    "blur_kernel_11": dict(ONLY_CROP, blur_p=1.0, blur_kernel=11),
    "full_pipeline": dict(size=SIZE),
    # the shuffle follows the jitter and precedes grey, blur and normalisation (the reference's order)
    "channel_shuffle_full_pipeline": dict(size=SIZE, channel_shuffle_p=1.0),
    "channel_shuffle_gray": dict(ONLY_CROP, channel_shuffle_p=1.0, gray_p=1.0),
}


def random_clips(shape, seed=0):
    """Random uint8 (B, T, H, W, 3) clips, with a grey patch (R = G = B: HSV's special case)."""
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randint(0, 256, (*shape, 3), generator=generator, dtype=torch.uint8)
    clips[:, :, :4, :4] = clips[:, :, :4, :4, :1]
    return clips


def torchvision_reference(clips, params, cfg):
    """torchvision.transforms.v2.functional, clip by clip, with the given parameters."""
    views = []
    for i, clip in enumerate(clips):
        x = TF.to_dtype(clip.permute(0, 3, 1, 2), torch.float32, scale=True)
        x = TF.resized_crop(x, int(params.top[i]), int(params.left[i]), int(params.height[i]), int(params.width[i]),
                            [cfg.size, cfg.size], antialias=cfg.antialias)
        if params.flip[i]:
            x = TF.horizontal_flip(x)
        if params.jitter[i]:
            for op in (JITTER_OPS[j] for j in params.jitter_order[i].tolist()):
                if getattr(cfg, op) != 0:  # ColorJitter skips an op of strength 0
                    x = TV_ADJUST[op](x, float(getattr(params, op)[i]))
        x = x[:, params.channel_order[i]]  # (not in torchvision) out[c] = in[order[c]]
        if params.gray[i]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params.blur[i]:
            sigma = float(params.sigma[i])
            x = TF.gaussian_blur(x, [cfg.kernel_size] * 2, [sigma, sigma])
        x = TF.normalize(x, list(cfg.mean), list(cfg.std))
        views.append(x.permute(1, 0, 2, 3))
    return torch.stack(views)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", CONFIGS)
def test_matches_torchvision_clip_by_clip(name, shape):
    cfg = AugmentConfig(**CONFIGS[name])
    augment = SpatialAugment(cfg)
    clips = random_clips(shape)
    out, params = augment(clips, generator=torch.Generator().manual_seed(1))
    assert out.shape == (shape[0], 3, shape[1], SIZE, SIZE) and out.dtype == torch.float32
    # Normalised outputs are in [0, 1] units divided by std.
    atol = ATOL / min(cfg.std)
    torch.testing.assert_close(out, torchvision_reference(clips, params, cfg), atol=atol, rtol=0)


def test_jitter_order_is_per_sample():
    """With all four ops on, samples apply them in their own orders (so orders really vary)."""
    augment = SpatialAugment(AugmentConfig(**CONFIGS["jitter_all_orders"]))
    params = augment.sample_params(64, 40, 40, generator=torch.Generator().manual_seed(0))
    assert len({tuple(order) for order in params.jitter_order.tolist()}) > 10
    clips = random_clips((64, 1, 40, 40))
    out, _ = augment(clips, params=params)
    torch.testing.assert_close(out, torchvision_reference(clips, params, augment.cfg), atol=ATOL, rtol=0)


def test_float_input_matches_uint8_input():
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    clips = random_clips((3, 2, 48, 40))
    out_uint8, params = augment(clips, generator=torch.Generator().manual_seed(0))
    out_float, _ = augment(clips.float() / 255, params=params)
    torch.testing.assert_close(out_float, out_uint8, atol=1e-5, rtol=0)


def test_center_matches_torchvision():
    cfg = AugmentConfig(size=SIZE)
    clips = random_clips((2, 3, 48, 64))
    side = round(0.75 * 48)
    reference = torch.stack([
        TF.normalize(TF.resize(TF.center_crop(TF.to_dtype(clip.permute(0, 3, 1, 2), torch.float32, scale=True),
                                              [side, side]), [SIZE, SIZE], antialias=True),
                     list(cfg.mean), list(cfg.std)).permute(1, 0, 2, 3)
        for clip in clips])
    out = SpatialAugment(cfg).center(clips, crop_fraction=0.75)
    torch.testing.assert_close(out, reference, atol=ATOL / min(cfg.std), rtol=0)
    assert torch.equal(out, SpatialAugment(cfg).center(clips, crop_fraction=0.75))


def test_samples_get_independent_parameters():
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    clips = random_clips((1, 2, 48, 48)).expand(8, -1, -1, -1, -1)
    out, params = augment(clips, generator=torch.Generator().manual_seed(0))
    assert len(set(zip(params.top.tolist(), params.left.tolist(), params.height.tolist()))) == 8
    assert len(set(params.sigma.tolist())) == 8
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.allclose(out[i], out[j])


def test_every_frame_gets_the_same_transform():
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    clips = random_clips((4, 3, 40, 48))
    out, params = augment(clips, generator=torch.Generator().manual_seed(0))
    for t in range(3):
        single_frame, _ = augment(clips[:, t:t + 1], params=params)
        torch.testing.assert_close(out[:, :, t], single_frame[:, :, 0], atol=1e-6, rtol=0)


def test_static_clip_stays_static():
    """DCLR's static clip (one frame repeated T times) augments with its own params and stays static."""
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    static = random_clips((4, 1, 40, 48)).expand(-1, 5, -1, -1, -1)
    out, _ = augment(static, generator=torch.Generator().manual_seed(0))
    for t in range(1, 5):
        assert torch.equal(out[:, :, t], out[:, :, 0])


def test_params_reuse_is_bit_identical_and_deterministic():
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    clips = random_clips((4, 2, 40, 40))
    out, params = augment(clips, generator=torch.Generator().manual_seed(3))
    assert torch.equal(augment(clips, params=params)[0], out)
    assert torch.equal(augment(clips, generator=torch.Generator().manual_seed(3))[0], out)
    assert not torch.equal(augment(clips, generator=torch.Generator().manual_seed(4))[0], out)


def test_params_select_repeat_and_move():
    params = SpatialAugment().sample_params(5, 64, 48, generator=torch.Generator().manual_seed(0))
    picked = params[torch.tensor([4, 0, 4])]
    assert len(picked) == 3
    for field in dataclasses.fields(AugmentParams):
        value, source = getattr(picked, field.name), getattr(params, field.name)
        assert torch.equal(value, source[torch.tensor([4, 0, 4])])
        assert getattr(params.to("cpu"), field.name).device.type == "cpu"


def test_parameter_distributions_respect_config():
    cfg = AugmentConfig()
    height, width, n = 120, 160, 20000
    params = SpatialAugment(cfg).sample_params(n, height, width, generator=torch.Generator().manual_seed(0))
    h, w = params.height.double(), params.width.double()
    assert bool((params.top >= 0).all() and (params.top + params.height <= height).all())
    assert bool((params.left >= 0).all() and (params.left + params.width <= width).all())
    # Area and aspect are drawn continuously, then w and h rounded: the unrounded box lies within half
    # a pixel of the rounded one, so its area and aspect bound what the rounded box may show.
    area = height * width
    assert bool(((h + 0.5) * (w + 0.5) >= cfg.scale[0] * area).all())
    assert bool(((h - 0.5) * (w - 0.5) <= cfg.scale[1] * area).all())
    assert bool(((w + 0.5) / (h - 0.5) >= cfg.ratio[0]).all() and ((w - 0.5) / (h + 0.5) <= cfg.ratio[1]).all())
    # Crop placement is uniform: mean top offset ~ half the free room.
    assert abs(float((params.top / (height - params.height).clamp(min=1)).mean()) - 0.5) < 0.02
    # Coin flips at their configured rates (4 standard deviations of a binomial mean).
    for flags, p in [(params.flip, cfg.flip_p), (params.jitter, cfg.jitter_p), (params.gray, cfg.gray_p),
                     (params.blur, cfg.blur_p)]:
        assert abs(float(flags.float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    for op in ("brightness", "contrast", "saturation"):
        strength = getattr(cfg, op)
        factors = getattr(params, op)
        assert bool((factors >= 1 - strength).all() and (factors <= 1 + strength).all())
    assert bool((params.hue.abs() <= cfg.hue).all())
    assert bool((params.sigma >= cfg.blur_sigma[0]).all() and (params.sigma <= cfg.blur_sigma[1]).all())
    assert torch.equal(params.jitter_order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    assert len({tuple(order) for order in params.jitter_order.tolist()}) == 24


def test_crop_falls_back_to_centre_for_extreme_frames():
    """RandomResizedCrop's fallback: no try fits a 10 x 200 frame, so the centred 10 x 13 box is used."""
    params = SpatialAugment().sample_params(200, 10, 200, generator=torch.Generator().manual_seed(0))
    fallback = params.width == 13
    assert bool(fallback.any())
    assert bool((params.height[fallback] == 10).all() and (params.left[fallback] == (200 - 13) // 2).all())
    assert bool((params.left + params.width <= 200).all() and (params.top + params.height <= 10).all())


def test_kernel_size_rule():
    assert AugmentConfig(size=112).kernel_size == 11  # DCLR: int(0.1 * 112) // 2 * 2 + 1
    assert AugmentConfig(size=32).kernel_size == 3
    assert AugmentConfig(size=32, blur_kernel=7).kernel_size == 7


def test_rejects_bad_input():
    augment = SpatialAugment(AugmentConfig(size=SIZE))
    with pytest.raises(ValueError, match="augment.py"):
        augment(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="augment.py"):
        augment(torch.zeros(1, 2, 16, 16, 3, dtype=torch.int32))
    params = augment.sample_params(1, 64, 64)
    with pytest.raises(ValueError, match="exceed"):
        augment(torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8), params=params.crop_only(
            params.top * 0 + 10, params.left * 0, params.height * 0 + 10, params.width * 0 + 10))


def test_channel_shuffle_permutes_each_clips_channels_before_normalising():
    """out[c] = normalise_c(x[order[c]]): against the same parameters with the identity order."""
    cfg = AugmentConfig(size=SIZE, flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, channel_shuffle_p=1.0)
    augment = SpatialAugment(cfg)
    clips = random_clips((6, 2, 40, 40))
    params = augment.sample_params(6, 40, 40, generator=torch.Generator().manual_seed(3))
    shuffled, _ = augment(clips, params=params)
    identity = dataclasses.replace(params, channel_order=torch.arange(3).expand(6, -1))
    plain, _ = augment(clips, params=identity)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1, 1)
    raw = plain * std + mean
    for b in range(6):
        expected = (raw[b, params.channel_order[b]] - mean[0]) / std[0]
        torch.testing.assert_close(shuffled[b], expected, atol=ATOL, rtol=0)


def test_channel_shuffle_draws_every_order_with_probability_p():
    augment = SpatialAugment(AugmentConfig(size=SIZE, channel_shuffle_p=0.5))
    orders = augment.sample_params(6000, 40, 40, generator=torch.Generator().manual_seed(0)).channel_order
    assert (orders.sort(dim=1).values == torch.arange(3)).all()  # permutations only
    identity = (orders == torch.arange(3)).all(dim=1).float().mean().item()
    # identity: the 1 - p unshuffled clips plus p/6 of the shuffled ones
    assert abs(identity - (0.5 + 0.5 / 6)) < 0.03
    counts = torch.unique(orders[~(orders == torch.arange(3)).all(dim=1)], dim=0, return_counts=True)[1]
    assert len(counts) == 5 and counts.min() > 0.8 * counts.float().mean()
    # off by default: the paper setting's parameters never permute
    default = SpatialAugment(AugmentConfig(size=SIZE)).sample_params(50, 40, 40).channel_order
    assert (default == torch.arange(3)).all()
