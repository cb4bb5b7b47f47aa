"""Where the views are made: HDC's views of a video and the temporal ops that reorder a clip's frames
(docs/methods.md, "Views" and "HDC's readings"; our reading of the HDC abstract).

From temporal windows a, b (and c) of one video and spatial parameter sets theta1, theta2 (theta3)
drawn independently per sample:
    v1 = S(a; theta1)
    v2 = S(a; theta2)   same frames as v1, other appearance  -> temporal contrast pair (v1, v2)
    v3 = S(b; theta1)   same appearance as v1, other time    -> TC's hard negative; SC's positive in E0
The spatial contrast's (SC) pair is one of four readings (`SC_PAIRS`), arms of the pre-registered
experiment in results/hdc_readings.md:
    E0 "same_appearance"         (v1, v3)                        today's reading: SC's positive is TC's hard negative
    E2 "third_window"            (v1, v4), v4 = S(c; theta1)     SC's second clip from a third window c
    E3 "independent_appearance"  (v1, v4), v4 = S(b; theta3)     other time and other appearance
    E4 "order_destroyed"         (shuffled v2, shuffled v3)      other time, other appearance, frame order destroyed
"""
from __future__ import annotations

import torch

from hdc_lib.augment import AugmentParams, SpatialAugment

SC_PAIRS = {"same_appearance": ("v1", "v3"), "third_window": ("v1", "v4"),
            "independent_appearance": ("v1", "v4"), "order_destroyed": ("v2_shuffled", "v3_shuffled")}


def windows_needed(sc_pair: str = "same_appearance") -> int:
    """Temporal windows per video that `hdc_views` reads for this SC reading."""
    return 3 if sc_pair == "third_window" else 2


def hdc_views(windows: torch.Tensor, augment: SpatialAugment, generator: torch.Generator | None = None,
              sc_pair: str = "same_appearance") -> dict[str, torch.Tensor | AugmentParams]:
    """Build v1, v2, v3 (and SC's views of the reading `sc_pair`) from windows uint8 (B, K, T, H, W, C),
    K = `windows_needed(sc_pair)` (window a, window b, and window c for "third_window").

    Returns dict(v1, v2, v3, ...) of float (B, C, T, size, size), plus theta1 and theta2 (and theta3)
    as AugmentParams so callers can replay or log them. The views come from one batched augmentation
    call; E0's draws are those of the two-view reading this module had before the other readings.
    """
    if sc_pair not in SC_PAIRS:
        raise ValueError(f"views.py: sc_pair {sc_pair!r} is not one of {list(SC_PAIRS)}")
    if windows.ndim != 6 or windows.shape[1] != windows_needed(sc_pair):
        raise ValueError(f"views.py: windows must be (B, {windows_needed(sc_pair)}, T, H, W, C) for "
                         f"sc_pair {sc_pair!r}, got {tuple(windows.shape)}")
    batch, _, _, height, width, _ = windows.shape
    # theta1, theta2 (and theta3 for "independent_appearance") in one draw
    draws = 3 if sc_pair == "independent_appearance" else 2
    thetas = augment.sample_params(draws * batch, height, width, generator=generator, device=windows.device)
    first = torch.arange(batch, device=windows.device)
    clips, rows = [windows[:, 0], windows[:, 0], windows[:, 1]], [first, first + batch, first]
    if sc_pair == "third_window":        # v4 = S(c; theta1)
        clips.append(windows[:, 2])
        rows.append(first)
    elif sc_pair == "independent_appearance":  # v4 = S(b; theta3)
        clips.append(windows[:, 1])
        rows.append(first + 2 * batch)
    views, _ = augment(torch.cat(clips), params=thetas[torch.cat(rows)])
    out = dict(zip(("v1", "v2", "v3", "v4"), views.chunk(len(clips))))
    out.update(theta1=thetas[:batch], theta2=thetas[batch:2 * batch])
    if sc_pair == "independent_appearance":
        out["theta3"] = thetas[2 * batch:]
    if sc_pair == "order_destroyed":
        out["v2_shuffled"] = shuffle_frames(out["v2"], generator)
        out["v3_shuffled"] = shuffle_frames(out["v3"], generator)
    return out


def shared_frames(indices: torch.Tensor) -> torch.Tensor:
    """How many of window a's frames window b also holds, per item: indices int (N, 2, T) of the two
    windows' raw frame numbers (a sampler's output). With the toy's offsets of 2-8 frames at stride 2,
    v3 = S(b; theta1) shows most of v1's frames in v1's exact appearance: SC's positive (v1, v3) is
    then close to pixel matching, and it is the very pair TC's hard negative pushes apart."""
    a, b = indices[:, 0], indices[:, 1]
    return (a[:, :, None] == b[:, None, :]).any(dim=2).sum(dim=1)


# -- temporal ops: the same frames in the wrong order -----------------------------------------
def shuffle_frames(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Permute the frames (dim 2) of each (B, C, T, H, W) sample randomly, never in identity order.

    Uniform over the T! - 1 non-identity orders (rejection sampling); T = 1 is returned unchanged.
    """
    batch, frames = x.shape[0], x.shape[2]
    if frames == 1:
        return x
    draw_device = generator.device if generator is not None else x.device
    order = torch.arange(frames, device=draw_device).repeat(batch, 1)
    redraw = torch.ones(batch, dtype=torch.bool, device=draw_device)
    while bool(redraw.any()):
        order[redraw] = torch.rand(int(redraw.sum()), frames, generator=generator, device=draw_device).argsort(dim=1)
        redraw = (order == torch.arange(frames, device=draw_device)).all(dim=1)
    return torch.take_along_dim(x, order.to(x.device).view(batch, 1, frames, 1, 1), dim=2)


def reverse_frames(x: torch.Tensor) -> torch.Tensor:
    """Play each (B, C, T, H, W) clip backwards."""
    return x.flip(2)


TEMPORAL_NEGATIVES = ("shuffled", "reversed")


def reordered(x: torch.Tensor, how: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The clip with its frames `shuffled` or `reversed`: same frames, wrong order. As a hard
    negative it can only be told from the clip by the order of its frames, i.e. by motion."""
    if how not in TEMPORAL_NEGATIVES:
        raise ValueError(f"{how!r} is not one of {list(TEMPORAL_NEGATIVES)}")
    return shuffle_frames(x, generator=generator) if how == "shuffled" else reverse_frames(x)
