"""Batched spatial augmentation of video clips and the deterministic eval transform (the temporal
ops that reorder frames live in views.py, where the views are made).

One parameter set per sample, identical for every frame of its clip, drawn independently across the
batch, applied to the whole batch at once on the clips' device. The parameters come back with the
output so the identical transform can be replayed on other frames (HDC's v3 = S(b; theta1)).

Pipeline (`SpatialAugment.__call__`), each step matching torchvision.transforms.v2.functional
applied to float [0, 1] frames with the same parameters (the tests check this to float tolerance):
  1. to float in [0, 1] (uint8 / 255), like v2.ToDtype(float32, scale=True) before anything else;
  2. random resized crop (RandomResizedCrop's parameter sampling, bilinear, antialias knob) and
     horizontal flip, as one matrix product per axis;
  3. colour jitter with probability jitter_p: brightness, contrast, saturation, hue in a random order
     drawn per sample (ColorJitter's semantics; an op whose strength is 0 is skipped, as there);
  4. grayscale with probability gray_p (3 channels out), after a random permutation of the RGB
     channels with probability channel_shuffle_p (not in torchvision; 0 in the paper setting);
  5. Gaussian blur with probability blur_p, sigma drawn per sample;
  6. ImageNet mean/std normalisation; output layout (B, C, T, size, size).

Relation to DCLR's official pipeline (docs/methods.md, "DCLR official code: bugs fixed"):
  - same: crop 112 with scale (0.2, 1) and ratio (3/4, 4/3) (torchvision's defaults, which DCLR's
    RandomResizedCropVideo uses), flip p 0.5, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8,
    grayscale p 0.2, blur p 0.5 with kernel int(0.1 * size) // 2 * 2 + 1 (11 at 112), sigma range
    (0.1, 2), ImageNet mean/std, parameters shared by the frames of a clip and independent across
    clips.
  - differs (ours): DCLR draws the blur sigma once when the pipeline is built and keeps it for the
    whole run (a bug); we draw it per sample. DCLR (kornia) applies grayscale before the jitter; we
    use torchvision's usual order jitter -> grayscale (they differ only where clamping bites).
    DCLR's crop resizes without antialiasing (torch interpolate's default); ours antialiases by
    default like torchvision.transforms.v2, `AugmentConfig(antialias=False)` gives DCLR's.
  - as torchvision does on a video, contrast blends each frame with that frame's own mean grey
    level, so the per-clip parameters are identical but the reference grey follows the frame.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# torchvision's luma weights (ITU-R 601-2), used by grayscale, saturation and contrast.
_LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its centre fallback


@dataclass(frozen=True)
class AugmentConfig:
    """Spatial augmentation settings; defaults: the paper setting (docs/methods.md, "Views")."""

    size: int = 112
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    antialias: bool = True
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    # A random RGB channel order per clip: a hue change no colour survives, so an object's colour
    # cannot identify a video across views (the toy world's saturated colours barely move under hue 0.1).
    channel_shuffle_p: float = 0.0
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def kernel_size(self) -> int:
        """Blur kernel side: `blur_kernel`, else the odd number near 10% of `size` (DCLR's rule)."""
        return self.blur_kernel if self.blur_kernel is not None else int(0.1 * self.size) // 2 * 2 + 1


@dataclass
class AugmentParams:
    """Per-sample augmentation parameters, one row per clip (all tensors have first dim B).

    Crop boxes are in source pixels. `jitter_order[b, k]` is the index (into brightness, contrast,
    saturation, hue) of the jitter op sample b applies at position k. Index with `params[idx]` to
    select or repeat rows.
    """

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    jitter_order: torch.Tensor
    channel_order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def crop_only(cls, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                  width: torch.Tensor) -> AugmentParams:
        """Parameters that only crop and resize the given boxes: no flip, jitter, grayscale, blur."""
        off = torch.zeros_like(top, dtype=torch.bool)
        ones = torch.ones_like(top, dtype=torch.float32)
        order = torch.arange(len(_JITTER_OPS), device=top.device).expand(len(top), -1)
        return cls(top, left, height, width, flip=off, jitter=off, brightness=ones, contrast=ones,
                   saturation=ones, hue=torch.zeros_like(ones), jitter_order=order,
                   channel_order=torch.arange(3, device=top.device).expand(len(top), -1),
                   gray=off, blur=off, sigma=ones)

    def __len__(self) -> int:
        return len(self.top)

    def __getitem__(self, index) -> AugmentParams:
        return AugmentParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def to(self, device) -> AugmentParams:
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


class SpatialAugment:
    """Batched, per-sample, temporally consistent spatial augmentation (see the module docstring).

    `out, params = augment(clips, params=None, generator=None)`: clips uint8 or float in [0, 1],
    (B, T, H, W, C) with C = 3, on any device; out float32 (B, C, T, size, size), normalised.
    """

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = cfg or AugmentConfig()

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None, device=None) -> AugmentParams:
        """Draw independent parameters for `batch` clips of `height` x `width` frames.

        Draws happen on the generator's device (or `device`), then move to `device` (default cpu).
        """
        cfg = self.cfg
        device = torch.device(device if device is not None else "cpu")
        draw_device = generator.device if generator is not None else device

        def uniform(low, high, *shape, dtype=torch.float32):
            return low + (high - low) * torch.rand(batch, *shape, generator=generator, device=draw_device, dtype=dtype)

        def coin(p):
            return torch.rand(batch, generator=generator, device=draw_device) < p

        top, left, crop_h, crop_w = self._sample_boxes(height, width, uniform)
        channel_order = torch.arange(3, device=draw_device).expand(batch, -1)
        if cfg.channel_shuffle_p > 0:  # drawn only when used: other settings keep their streams
            shuffled = torch.rand(batch, 3, generator=generator, device=draw_device).argsort(dim=1)
            channel_order = torch.where(coin(cfg.channel_shuffle_p)[:, None], shuffled, channel_order)
        params = AugmentParams(
            top=top, left=left, height=crop_h, width=crop_w,
            flip=coin(cfg.flip_p),
            jitter=coin(cfg.jitter_p),
            # ColorJitter's factor ranges: [max(0, 1 - s), 1 + s] and hue [-h, h].
            brightness=uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
            contrast=uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
            saturation=uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
            hue=uniform(-cfg.hue, cfg.hue),
            jitter_order=torch.rand(batch, len(_JITTER_OPS), generator=generator, device=draw_device).argsort(dim=1),
            channel_order=channel_order,
            gray=coin(cfg.gray_p),
            blur=coin(cfg.blur_p),
            sigma=uniform(*cfg.blur_sigma),
        )
        return params.to(device)

    def _sample_boxes(self, height: int, width: int, uniform):
        """RandomResizedCrop.get_params, vectorised: the first of 10 tries that fits, else the centre.

        A try draws area ~ U(scale) * H * W and log-aspect ~ U(log ratio), then
        w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); it fits if 0 < h <= H and
        0 < w <= W, and its position is uniform over the valid offsets.
        """
        scale, ratio = self.cfg.scale, self.cfg.ratio
        area = height * width * uniform(*scale, _CROP_ATTEMPTS, dtype=torch.float64)
        aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1]), _CROP_ATTEMPTS, dtype=torch.float64))
        tries_w = torch.sqrt(area * aspect).round().long()
        tries_h = torch.sqrt(area / aspect).round().long()
        fits = (tries_w > 0) & (tries_w <= width) & (tries_h > 0) & (tries_h <= height)
        first_fit = fits.long().argmax(dim=1, keepdim=True)
        found = fits.any(dim=1)
        # Fallback: the whole frame, its aspect clamped into `ratio`, centred.
        frame_aspect = width / height
        if frame_aspect < min(ratio):
            fallback_w, fallback_h = width, int(round(width / min(ratio)))
        elif frame_aspect > max(ratio):
            fallback_w, fallback_h = int(round(height * max(ratio))), height
        else:
            fallback_w, fallback_h = width, height
        crop_h = torch.where(found, tries_h.gather(1, first_fit).squeeze(1), fallback_h)
        crop_w = torch.where(found, tries_w.gather(1, first_fit).squeeze(1), fallback_w)
        # top ~ U{0, ..., H - h}, left ~ U{0, ..., W - w}
        random_top = (uniform(0.0, 1.0, dtype=torch.float64) * (height - crop_h + 1)).floor().long()
        random_left = (uniform(0.0, 1.0, dtype=torch.float64) * (width - crop_w + 1)).floor().long()
        top = torch.where(found, random_top, (height - fallback_h) // 2)
        left = torch.where(found, random_left, (width - fallback_w) // 2)
        return top, left, crop_h, crop_w

    def __call__(self, clips: torch.Tensor, params: AugmentParams | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, AugmentParams]:
        """Augment clips (B, T, H, W, 3) with `params` (drawn from `generator` when None)."""
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"augment.py: clips must be (B, T, H, W, 3), got {tuple(clips.shape)}")
        if clips.dtype != torch.uint8 and not clips.is_floating_point():
            raise TypeError(f"augment.py: clips must be uint8 or float in [0, 1], got {clips.dtype}")
        batch, _, height, width, _ = clips.shape
        if params is None:
            params = self.sample_params(batch, height, width, generator=generator, device=clips.device)
        params = params.to(clips.device)
        if len(params) != batch:
            raise ValueError(f"augment.py: {len(params)} parameter rows for a batch of {batch}")
        if bool(((params.top + params.height > height) | (params.left + params.width > width)).any()):
            raise ValueError(f"augment.py: crop boxes exceed the {height}x{width} frames")

        # uint8 -> float; resizing is linear, so uint8's / 255 is folded into it
        scale = 1 / 255 if clips.dtype == torch.uint8 else 1.0
        x = self._crop_resize_flip(clips.to(torch.float32), params, scale)
        x = self._jitter(x, params)
        # The channel shuffle, out[c] = in[order[c]] after the jitter, commutes with the blur (every
        # channel alike) and, with each sample's luma weights and normalisation constants permuted
        # alike, with the grey and the normalisation. So it is applied last, as the index of the copy
        # to (B, C, T, H, W) that is made anyway: a gather of its own cost a fifth of HDC's views.
        order = params.channel_order                                   # (B, 3)
        # x's channel k lands at position position_of[k]: grey' = sum_k w[position_of[k]] x_k
        position_of = order.argsort(dim=1)
        luma = x.new_tensor(_LUMA_WEIGHTS)[position_of].view(batch, 1, 3, 1, 1)
        x = _apply_to_rows(x, params.gray,
                           lambda rows: (x[rows] * luma[rows]).sum(dim=2, keepdim=True).expand(-1, -1, 3, -1, -1))
        x = _apply_to_rows(x, params.blur,
                           lambda rows: _gaussian_blur(x[rows], params.sigma[rows], self.cfg.kernel_size))
        # (x_k - mean[position_of[k]]) / std[position_of[k]]: after the shuffle, channel c is normalised
        # with mean[c] and std[c]
        mean = x.new_tensor(self.cfg.mean)[position_of].view(batch, 1, 3, 1, 1)
        std = x.new_tensor(self.cfg.std)[position_of].view(batch, 1, 3, 1, 1)
        x = x.sub_(mean).div_(std)
        # out[b, c] = x[b, :, order[b, c]], in the (B, C, T, H, W) layout
        samples = torch.arange(batch, device=x.device)[:, None]
        return x.permute(0, 2, 1, 3, 4)[samples, order], params

    def center(self, clips: torch.Tensor, crop_fraction: float = 0.875) -> torch.Tensor:
        """Deterministic eval transform: centred square crop, resize to `size`, normalise.

        The square's side is round(crop_fraction * min(H, W)), placed like torchvision's
        center_crop. The default 0.875 = 112 / 128 reproduces the usual "resize the short side to
        128, centre-crop 112" (our choice). Returns (B, C, T, size, size).
        """
        batch, _, height, width, _ = clips.shape
        side = int(round(crop_fraction * min(height, width)))
        top, left = int(round((height - side) / 2)), int(round((width - side) / 2))
        box = torch.tensor([top, left, side, side], device=clips.device).expand(batch, 4)
        params = AugmentParams.crop_only(*box.unbind(dim=1))
        return self(clips, params=params)[0]

    def _crop_resize_flip(self, frames: torch.Tensor, params: AugmentParams, scale: float) -> torch.Tensor:
        """Crop each sample's box from float (B, T, H, W, C) frames, resize it to size x size, flip
        it and multiply by `scale`: two matrix products, giving (B, T, C, size, size).

        Bilinear resizing is linear and separable, so out = R_y @ frame @ R_x^T where R_y (size x H)
        and R_x (size x W) hold the crop's resize weights at the crop offset; a horizontal flip
        reverses the order of the output columns, i.e. the rows of R_x.
        """
        batch, frames_per_clip, height, width, channels = frames.shape
        size = self.cfg.size
        rows = self._resize_matrices(params.top, params.height, height, frames.device) * scale
        cols = self._resize_matrices(params.left, params.width, width, frames.device)
        cols = torch.where(params.flip.view(-1, 1, 1), cols.flip(1), cols)
        # R_y @ frame, on the channels-last frames: (size x H) @ (H x W*C) for every frame of a sample
        x = torch.matmul(rows[:, None], frames.reshape(batch, frames_per_clip, height, width * channels))
        # to channels-first, then (R_y @ frame) @ R_x^T for all image rows of a sample at once
        x = x.view(batch, frames_per_clip, size, width, channels).permute(0, 1, 4, 2, 3)
        x = torch.bmm(x.reshape(batch, -1, width), cols.transpose(1, 2))
        return x.view(batch, frames_per_clip, channels, size, size)

    def _resize_matrices(self, starts: torch.Tensor, lengths: torch.Tensor, in_len: int, device) -> torch.Tensor:
        """(B, size, in_len): each sample's resize matrix for its crop [start, start + length).

        Row b is the cached matrix of a crop of length L_b placed at offset 0, shifted right by
        start_b: M[b, i, j] = table[L_b, i, j - start_b] (zero outside the crop). One gather for
        the whole batch, not a Python loop over samples.
        """
        table = _resize_table(in_len, self.cfg.size, self.cfg.antialias, torch.device(device))
        by_length = table[lengths.to(table.device)]                          # (B, size, in_len)
        source = torch.arange(in_len, device=table.device) - starts.to(table.device)[:, None]
        inside = (source >= 0) & (source < in_len)
        shifted = by_length.gather(2, source.clamp(0, in_len - 1)[:, None, :].expand_as(by_length))
        return shifted * inside[:, None, :]

    def _jitter(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Colour jitter, each sample's ops in its own order; a loop over positions and ops, not samples."""
        adjust = {"brightness": _adjust_brightness, "contrast": _adjust_contrast,
                  "saturation": _adjust_saturation, "hue": _adjust_hue}
        for position in range(len(_JITTER_OPS)):
            for op_index, op in enumerate(_JITTER_OPS):
                if getattr(self.cfg, op) == 0:
                    continue
                factors = getattr(params, op).view(-1, 1, 1, 1, 1)
                x = _apply_to_rows(x, params.jitter & (params.jitter_order[:, position] == op_index),
                                   lambda rows: adjust[op](x[rows], factors[rows]))
        return x


def _apply_to_rows(x: torch.Tensor, mask: torch.Tensor, transform) -> torch.Tensor:
    """Replace the samples selected by `mask` with transform(their indices); skip when none is."""
    rows = mask.nonzero().squeeze(1)
    if len(rows):
        x.index_copy_(0, rows, transform(rows))
    return x


@functools.lru_cache(maxsize=None)
def _resize_matrix(in_len: int, out_len: int, antialias: bool, device: torch.device) -> torch.Tensor:
    """(out_len, in_len) matrix of torch's 1-D bilinear resize weights (align_corners=False).

    Resizing is linear, so resizing the rows of the identity with torch's own interpolate (the call
    torchvision's resize makes) yields exactly the weights it applies.
    """
    identity_rows = torch.eye(in_len, device=device).view(1, in_len, 1, in_len)
    resized = F.interpolate(identity_rows, size=(1, out_len), mode="bilinear", align_corners=False,
                            antialias=antialias)
    return resized.view(in_len, out_len).T.contiguous()


@functools.lru_cache(maxsize=None)
def _resize_table(in_len: int, out_len: int, antialias: bool, device: torch.device) -> torch.Tensor:
    """(in_len + 1, out_len, in_len): entry L holds the resize matrix of a crop of length L in its
    first L columns (zeros after them); entry 0 is unused."""
    table = torch.zeros(in_len + 1, out_len, in_len, device=device)
    for length in range(1, in_len + 1):
        table[length, :, :length] = _resize_matrix(length, out_len, antialias, device)
    return table


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(..., 1, H, W) grey level of (..., 3, H, W) RGB: 0.2989 R + 0.587 G + 0.114 B."""
    r, g, b = x.unbind(dim=-3)
    return (r * _LUMA_WEIGHTS[0] + g * _LUMA_WEIGHTS[1] + b * _LUMA_WEIGHTS[2]).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    # blend = clamp(ratio * x + (1 - ratio) * other, 0, 1)
    return (x * ratio + other * (1 - ratio)).clamp_(0, 1)


def _adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # brightness: clamp(factor * x, 0, 1)
    return (x * factor).clamp_(0, 1)


def _adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # contrast: blend with the frame's mean grey level
    return _blend(x, _luma(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def _adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # saturation: blend with the pixel's own grey level
    return _blend(x, _luma(x), factor)


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue: h' = (h + shift) mod 1 in HSV space (torchvision's adjust_hue maths).

    torchvision converts RGB -> HSV (Pillow's formulas), shifts h and converts back. A hue rotation
    keeps v = max(r, g, b) and s = chroma / v, with chroma = max - min, so we keep max and chroma
    and only recompute the channels from the new hue (equal up to float rounding).
    """
    r, g, b = x.unbind(dim=-3)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    max_is_r = value == r
    max_is_g = (value == g) & ~max_is_r
    max_is_b = ~(max_is_r | max_is_g)
    # 6 h = (g - b) / chroma if R is the largest, 2 + (b - r) / chroma if G, 4 + (r - g) / chroma if B;
    # h = 0 for grey pixels (chroma 0, whose divisor becomes 1 to avoid 0 / 0; masks are multiplied,
    # not torch.where-selected, which is several times slower on CPU)
    sextant_numerator = (g - b) * max_is_r + (b - r + 2 * chroma) * max_is_g + (r - g + 4 * chroma) * max_is_b
    hue6 = sextant_numerator / (chroma + (chroma == 0))
    # 6 h' = (6 h + 6 shift) mod 6
    hue6 = (hue6 + 6 * shift.squeeze(-3)).remainder_(6)
    # HSV -> RGB: channel = v - chroma * w, w = the hue's distance from the channel's primary colour,
    # w_R = clamp(2 - |6h' - 3|, 0, 1), w_G = clamp(|6h' - 2| - 1, 0, 1), w_B = clamp(|6h' - 4| - 1, 0, 1)
    w_r = (2 - (hue6 - 3).abs_()).clamp_(0, 1)
    w_g = ((hue6 - 2).abs_() - 1).clamp_(0, 1)
    w_b = ((hue6 - 4).abs_() - 1).clamp_(0, 1)
    return torch.stack([value - chroma * w for w in (w_r, w_g, w_b)], dim=-3)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur (n, T, C, H, W) with a per-sample sigma: separable grouped conv, reflect padding.

    torchvision's kernel: taps at x_j = linspace(-(k - 1) / 2, (k - 1) / 2) / sqrt(2), i.e.
    weights exp(-d^2 / (2 sigma^2)) at integer offsets d, normalised by a softmax.
    """
    n, frames, channels, height, width = x.shape
    half_range = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    taps = torch.linspace(-half_range, half_range, kernel_size, device=x.device)
    kernels = torch.softmax(-(taps / sigma[:, None]).pow(2), dim=1)
    # one conv group per (sample, frame, channel) plane, each with its sample's kernel
    planes_per_sample = frames * channels
    kernels = kernels.repeat_interleave(planes_per_sample, dim=0)
    planes = x.reshape(1, n * planes_per_sample, height, width)
    pad = kernel_size // 2
    planes = F.conv2d(F.pad(planes, (pad, pad, 0, 0), mode="reflect"), kernels[:, None, None, :],
                      groups=len(kernels))
    planes = F.conv2d(F.pad(planes, (0, 0, pad, pad), mode="reflect"), kernels[:, None, :, None],
                      groups=len(kernels))
    return planes.reshape(x.shape)
