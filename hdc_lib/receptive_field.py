"""Receptive fields of a backbone's stages: the theoretical field, from the kernels and strides of its
convolutions, and the effective one, measured as the input gradient of one output unit (Luo et al.,
2016). Notebook 03 checks the two against each other, and asks how local each level HDC taps is.

Along one axis, a unit whose neighbours are j input positions apart (its "jump") and which sees r
input positions, the first `offset` positions before its own position times j, becomes after a
convolution with kernel k, stride s and padding p a unit that sees

    r' = r + (k - 1) j,   j' = j s,   offset' = offset + p j,

starting from r = j = 1, offset = 0 at the input. Output position o then sees the inputs
[o j - offset, o j - offset + r - 1] (some of them padding when the interval leaves the input).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from hdc_lib.backbones import STAGE_NAMES


class Field(NamedTuple):
    """Per axis (T, H, W), as int arrays: how many input positions a unit sees, how far apart
    neighbouring units are in the input, and how far before o * jump its field starts."""
    size: np.ndarray
    jump: np.ndarray
    offset: np.ndarray


def main_path_convs(backbone) -> list[tuple[str, nn.Conv3d]]:
    """The 3D convolutions of the stem and of each block's conv1 and conv2, in the order they run,
    each with its stage ("stem", "layer1", ...). Not the shortcuts: a shortcut (identity or a
    strided 1x1x1 conv) sees less than the path beside it, so it never widens the field."""
    convs = [("stem", m) for m in backbone.stem.modules() if isinstance(m, nn.Conv3d)]
    for stage in STAGE_NAMES:
        for block in getattr(backbone, stage):
            convs += [(stage, m) for part in (block.conv1, block.conv2) for m in part.modules()
                      if isinstance(m, nn.Conv3d)]
    return convs


def receptive_fields(backbone) -> dict[str, Field]:
    """The theoretical field of a unit of the stem's and of every stage's output map."""
    size, jump, offset = np.ones(3, int), np.ones(3, int), np.zeros(3, int)
    fields = {}
    for stage, conv in main_path_convs(backbone):
        k, s, p = (np.array(getattr(conv, name)) for name in ("kernel_size", "stride", "padding"))
        # r' = r + (k - 1) j and offset' = offset + p j use the jump before this convolution's stride
        size, offset, jump = size + (k - 1) * jump, offset + p * jump, jump * s
        fields[stage] = Field(size.copy(), jump.copy(), offset.copy())
    return fields


def field_span(field: Field, position) -> list[tuple[int, int]]:
    """The input positions (first, last) per axis that output `position` (t, y, x) sees:
    [o j - offset, o j - offset + r - 1]."""
    return [(int(o * j - off), int(o * j - off + r - 1))
            for o, j, off, r in zip(position, field.jump, field.offset, field.size)]


def gradient_footprints(backbone, x: torch.Tensor, stages=STAGE_NAMES) -> dict[str, torch.Tensor]:
    """{stage: (B, T, H, W)} |d (sum over channels of the map's central position) / d input|, summed
    over the input's colour channels: non-zero exactly where that unit depends on the input.

    Computed in eval mode (restored after): BatchNorm's batch statistics would couple every
    position, and every clip of the batch, to every other; in eval mode each clip gets its own
    gradient from one backward pass per stage."""
    was_training = backbone.training
    backbone.eval()
    x = x.detach().clone().requires_grad_(True)
    stage_maps = backbone.features(x, stages)
    footprints = {}
    for stage in stages:
        fmap = stage_maps[stage]
        t, h, w = (d // 2 for d in fmap.shape[2:])
        (grad,) = torch.autograd.grad(fmap[:, :, t, h, w].sum(), x, retain_graph=True)
        footprints[stage] = grad.abs().sum(1).detach()
    backbone.train(was_training)
    return footprints


def footprint_span(footprint: torch.Tensor) -> list[tuple[int, int]]:
    """The first and last position (per axis) where a (T, H, W) footprint is non-zero."""
    spans = []
    for axis in range(3):
        hit = (footprint > 0).any(dim=tuple(a for a in range(3) if a != axis)).nonzero().flatten()
        spans.append((int(hit.min()), int(hit.max())))
    return spans


def field_shares(footprint: torch.Tensor) -> tuple[float, float]:
    """(support share, 90%-mass share) of the input's positions, averaged over the clips of a
    (B, T, H, W) footprint: the share where it is non-zero (what the unit sees at all), and the
    smallest share of positions, taken largest first, that holds 90% of its sum (what it reads)."""
    flat = footprint.flatten(1)
    support = (flat > 0).double().mean(1)
    mass = flat.sort(1, descending=True).values.cumsum(1) / flat.sum(1, keepdim=True)
    share90 = ((mass < 0.9).sum(1) + 1).double() / flat.shape[1]
    return support.mean().item(), share90.mean().item()
