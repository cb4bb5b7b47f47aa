"""The numeric precision the backbones compute in: `train.precision = auto | fp32 | bf16 | fp16`.

What runs in low precision is the backbone and nothing else (`backbones.Backbone.features`): its
convolutions run in bf16 (fp16) under autocast, its BatchNorms normalise that input with statistics
accumulated in fp32 (running statistics and affine weights stay fp32), and the maps it returns are
fp32. So the heads, the losses (the softmax over logits), DCLR's activation maps and HDC's
invariance EMA all run in fp32. fp16 gradients can underflow, so fp16 trains with a GradScaler.

`auto` is the fastest precision that computes correctly on the device:
- CUDA: bf16 where the GPU supports it, else fp16.
- CPU: bf16 where the CPU has AMX tiles (oneDNN's AMX kernels: the tiny backbone's training step
  1.6-1.8x faster than fp32, results/bench.md) and the bf16 convolutions pass `conv3d_agrees`;
  fp32 otherwise. Without AMX, oneDNN's avx512_core_bf16 conv3d weight gradient is wrong for maps
  of depth 2 (the tiny net's layer3 and layer4; a cosine near 0 with the fp32 gradient, NaN when the
  reused heap memory holds NaN: results/bench.md has the reproduction), and on this machine it was
  no faster than fp32 anyway.

An explicit low precision is checked the same way: a device whose bf16 (fp16) convolutions disagree
with fp32 is refused with a ConfigError instead of training on wrong gradients.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from hdc_lib.config import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# (batch, in channels, out channels, depth, size, stride) of the convolutions checked: a map of
# depth 2 at the tiny net's layer4 widths (where oneDNN's avx512_core_bf16 weight gradient fails)
# and a strided one of depth 4 (layer1-3). 3x3x3 kernels, padding 1, both memory formats.
CHECKED_CONVS = ((2, 64, 96, 2, 4, (1, 1, 1)), (2, 16, 32, 4, 8, (1, 2, 2)))
# Each of output, input gradient and weight gradient must have a cosine with fp32 of at least this.
# Rounding to bf16 (8 bits of mantissa) costs about 1e-5 of cosine; a wrong kernel costs far more
# (0.47 for the partly wrong weight gradient, ~0 for the garbage one).
AGREEMENT = 0.999


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, the units oneDNN's fast bf16 kernels run on."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


@functools.cache
def conv3d_agrees(device_type: str, precision: str) -> bool:
    """Whether `precision`'s 3D convolutions on this device agree with fp32: output, input
    gradient and weight gradient of `CHECKED_CONVS`, on inputs exactly representable in
    `precision` (so rounding the inputs costs nothing and only the kernels are compared).
    Takes a few milliseconds; cached per device type and precision."""
    dtype = DTYPES[precision]
    generator = torch.Generator().manual_seed(0)
    for batch, c_in, c_out, depth, size, stride in CHECKED_CONVS:
        x = torch.randn(batch, c_in, depth, size, size, generator=generator).to(dtype)
        weight = (torch.randn(c_out, c_in, 3, 3, 3, generator=generator) * 0.05).to(dtype)
        out_shape = F.conv3d(x.float(), weight.float(), stride=stride, padding=1).shape
        grad = torch.randn(out_shape, generator=generator).to(dtype)
        for memory_format in (torch.channels_last_3d, torch.contiguous_format):
            results = []
            for compute in (torch.float32, dtype):
                xs, ws, gs = (t.to(device_type, compute).contiguous(memory_format=memory_format).clone()
                              for t in (x, weight, grad))
                xs.requires_grad_(), ws.requires_grad_()
                out = F.conv3d(xs, ws, stride=stride, padding=1)
                out.backward(gs)
                results.append([t.detach().double().flatten().cpu() for t in (out, xs.grad, ws.grad)])
            for reference, low in zip(*results):
                # nan_to_num: a NaN makes the cosine NaN, which would compare as "not below".
                if F.cosine_similarity(low.nan_to_num(), reference, dim=0) < AGREEMENT or not low.isfinite().all():
                    return False
    return True


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision `precision` means on `device`: `auto` made concrete (see the module doc), an
    explicit low precision checked. Raises ConfigError for one the device cannot compute correctly."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: {precision!r} is not one of {list(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_amx() and conv3d_agrees("cpu", "bf16"):
            return "bf16"
        return "fp32"
    if precision == "fp32":
        return precision
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision=bf16: this GPU has no bf16; use auto (fp16) or fp32")
    if not conv3d_agrees(device.type, precision):
        raise ConfigError(f"train.precision={precision}: this {device.type}'s {precision} 3D convolutions "
                          "disagree with fp32 (results/bench.md, the bf16 kernel bug); use auto or fp32")
    return precision


def autocast(precision: str, device_type: str):
    """The autocast region a backbone runs in: none for fp32, bf16 or fp16 autocast otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that scales the loss under fp16 (whose small gradients underflow to 0) and is a
    pass-through otherwise (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
