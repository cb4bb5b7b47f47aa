"""Row 2, augmentation: the batched SpatialAugment against torchvision.transforms.v2 clip by clip."""
from __future__ import annotations

import torch

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.bench.timing import interleaved_medians


def bench_augment(batch: int = 64, frames: int = 8, in_size: int = 64, out_size: int = 32,
                  repeats: int = 5) -> dict[str, float]:
    """Seconds of one batch of views: batched SpatialAugment vs torchvision.transforms.v2.

    The torchvision pipeline (ToDtype, RandomResizedCrop, flip, RandomApply(ColorJitter),
    RandomGrayscale, RandomApply(GaussianBlur), Normalize) runs clip by clip on CPU, which is how a
    Dataset would use it to get per-sample parameters. Both use torch's current thread count.
    """
    from torchvision.transforms import v2

    cfg = AugmentConfig(size=out_size)
    augment = SpatialAugment(cfg)
    per_clip = v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(out_size, scale=cfg.scale, ratio=cfg.ratio, antialias=cfg.antialias),
        v2.RandomHorizontalFlip(cfg.flip_p),
        v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p),
        v2.RandomGrayscale(cfg.gray_p),
        v2.RandomApply([v2.GaussianBlur(cfg.kernel_size, cfg.blur_sigma)], p=cfg.blur_p),
        v2.Normalize(cfg.mean, cfg.std),
    ])
    clips = torch.randint(0, 256, (batch, frames, in_size, in_size, 3), dtype=torch.uint8)
    seconds = interleaved_medians({
        "batched": lambda: augment(clips),
        # per clip: (T, H, W, C) -> (T, C, H, W) in, (C, T, H, W) out
        "torchvision": lambda: torch.stack([per_clip(clip.permute(0, 3, 1, 2)).permute(1, 0, 2, 3)
                                            for clip in clips]),
    }, repeats)
    return {"batched_s": seconds["batched"], "torchvision_s": seconds["torchvision"],
            "speedup": seconds["torchvision"] / seconds["batched"]}
