"""HDC's three views of a video (docs/methods.md, "Views"; our reading of the HDC abstract).

From two temporal windows a, b of one video and two spatial parameter sets theta1, theta2 drawn
independently per sample:
    v1 = S(a; theta1)
    v2 = S(a; theta2)   same frames as v1, other appearance  -> temporal contrast pair (v1, v2)
    v3 = S(b; theta1)   same appearance as v1, other time    -> spatial contrast pair (v1, v3)
"""
from __future__ import annotations

import torch

from hdc_lib.augment import AugmentParams, SpatialAugment


def hdc_views(windows: torch.Tensor, augment: SpatialAugment,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor | AugmentParams]:
    """Build v1, v2, v3 from windows uint8 (B, 2, T, H, W, C) (window a, window b of each video).

    Returns dict(v1, v2, v3) of float (B, C, T, size, size), plus theta1 and theta2 (AugmentParams)
    so callers can replay or log them. All three views come from one batched augmentation call.
    """
    if windows.ndim != 6 or windows.shape[1] != 2:
        raise ValueError(f"views.py: windows must be (B, 2, T, H, W, C), got {tuple(windows.shape)}")
    batch, _, _, height, width, _ = windows.shape
    window_a, window_b = windows[:, 0], windows[:, 1]
    thetas = augment.sample_params(2 * batch, height, width, generator=generator, device=windows.device)
    theta1, theta2 = thetas[:batch], thetas[batch:]
    # rows [a; a; b] with parameters [theta1; theta2; theta1]
    first = torch.arange(batch, device=windows.device)
    second = first + batch
    views, _ = augment(torch.cat([window_a, window_a, window_b]), params=thetas[torch.cat([first, second, first])])
    v1, v2, v3 = views.chunk(3)
    return {"v1": v1, "v2": v2, "v3": v3, "theta1": theta1, "theta2": theta2}
