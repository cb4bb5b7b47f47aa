"""Video backbones with per-stage feature taps.

Every backbone is a stem followed by four residual stages ``layer1`` .. ``layer4``. HDC puts heads on
several stages and DCLR reads activation maps off the last one, so besides ``forward`` (global
average pool of the last stage, as in every paper's linear probe) a backbone offers
``features(x, stages)``: the feature map after each requested stage's final ReLU (so non-negative),
running only as deep as the deepest stage asked for. The stages compute in the backbone's
``precision`` (``use_precision``; fp32 by default) and return fp32 maps (``hdc_lib.precision``).

Two families:
- ``"r3d_18"``, ``"r2plus1d_18"``, ``"mc3_18"``: torchvision's video ResNets (the papers' backbones),
  randomly initialised (``weights=None``; nothing can be downloaded here), classifier dropped.
- ``"tiny"``: our small 3D ResNet for CPU work (see ``tiny_backbone``).
"""

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torchvision.models import video
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

from hdc_lib.config import ConfigError
from hdc_lib.precision import PRECISIONS, autocast

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
TORCHVISION_BACKBONES = {"r3d_18": video.r3d_18, "r2plus1d_18": video.r2plus1d_18, "mc3_18": video.mc3_18}

# Tiny net: channel widths and (T, H, W) strides of the four stages. With the stem's (1, 2, 2)
# stride the total stride is (4, 8, 8), so an 8x32x32 clip ends as a 2x4x4 map: the smallest map on
# which an activation map is still worth looking at. layer4 dominates the cost; width 96 there (not
# 128) gives about 850 clips/s forward+backward at batch 64, 8x32x32, on two CPU cores (128: ~700).
TINY_WIDTHS = (16, 32, 64, 96)
TINY_STRIDES = ((2, 2, 2), (1, 2, 2), (2, 1, 1), (1, 1, 1))


class Backbone(nn.Module):
    """A stem and four stages with a common interface.

    Attributes:
        stage_names: ``("layer1", "layer2", "layer3", "layer4")``, shallow to deep.
        channels: channel count of each stage's output, e.g. ``{"layer4": 512, ...}``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``, what the stages compute in (set it with
            ``use_precision``); the maps returned are fp32 whatever it is.
    """

    stage_names = STAGE_NAMES

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Sequential]):
        super().__init__()
        if len(stages) != len(STAGE_NAMES):
            raise ValueError(f"backbones.py: expected {len(STAGE_NAMES)} stages, got {len(stages)}")
        self.stem = stem
        for name, stage in zip(STAGE_NAMES, stages):
            self.add_module(name, stage)
        # Every stage ends with a BasicBlock whose second conv is followed by BatchNorm3d(C_out).
        self.channels = {name: stage[-1].conv2[1].num_features for name, stage in zip(STAGE_NAMES, stages)}
        self.precision = "fp32"

    def features(self, x: torch.Tensor, stages: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Feature maps (B, C_l, T_l, H_l, W_l) of the requested stages (default: all), shallow first.

        x: float (B, C, T, H, W). Each map is the stage output after its final ReLU, so it is
        non-negative. Stages deeper than the deepest requested one are not run.
        """
        wanted = STAGE_NAMES if stages is None else tuple(stages)
        unknown = [name for name in wanted if name not in STAGE_NAMES]
        if unknown or not wanted:
            raise ValueError(f"backbones.py: stages must be a non-empty subset of {STAGE_NAMES}, got {wanted}")
        depth = max(STAGE_NAMES.index(name) for name in wanted) + 1
        maps = {}
        with autocast(self.precision, x.device.type):
            x = self.stem(x)
            for name in STAGE_NAMES[:depth]:
                x = getattr(self, name)(x)
                if name in wanted:
                    maps[name] = x
        # Whatever ran inside, what reads the maps (heads, losses, activation maps) gets fp32.
        return {name: feature_map.float() for name, feature_map in maps.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool of the last stage over (T, H, W): (B, C_last)."""
        return self.features(x, STAGE_NAMES[-1:])[STAGE_NAMES[-1]].mean(dim=(2, 3, 4))


def use_precision(model: nn.Module, precision: str) -> nn.Module:
    """Make every backbone inside `model` (the online one, a momentum copy) compute in `precision`
    (``"fp32"``, ``"bf16"`` or ``"fp16"``; resolve ``"auto"`` first with
    ``hdc_lib.precision.resolve_precision``). Returns `model`."""
    if precision not in PRECISIONS or precision == "auto":
        raise ValueError(f"backbones.py: precision must be fp32, bf16 or fp16, got {precision!r}")
    for module in model.modules():
        if isinstance(module, Backbone):
            module.precision = precision
    return model


def build_backbone(name: str, **kwargs) -> Backbone:
    """Build a backbone by name: ``"tiny"`` (keyword options of ``tiny_backbone``) or one of
    ``"r3d_18"``, ``"r2plus1d_18"``, ``"mc3_18"`` (no options)."""
    if name == "tiny":
        return tiny_backbone(**kwargs)
    if name in TORCHVISION_BACKBONES:
        return torchvision_backbone(name, **kwargs)
    raise ConfigError(f"model.backbone: unknown backbone {name!r}; choose 'tiny' or one of "
                      f"{sorted(TORCHVISION_BACKBONES)}", key="model.backbone")


def torchvision_backbone(name: str) -> Backbone:
    """torchvision's video ResNet ``name`` with random weights, its stem and stages reused as they are.

    Strides are torchvision's: (1, 2, 2) in the stem, 2 in every axis for layer2-4 (r3d, r2plus1d)
    or spatial only (mc3), so 8x32x32 ends as 1x2x2 for r3d_18; any clip length and size runs.
    """
    net = TORCHVISION_BACKBONES[name](weights=None)
    return Backbone(net.stem, [getattr(net, stage) for stage in STAGE_NAMES])


def tiny_backbone(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Our small 3D ResNet for CPU experiments (not from either paper).

    Stem: 3x3x3 conv, stride (1, 2, 2), BatchNorm, ReLU. Then four stages of one torchvision
    ``BasicBlock`` each (two 3x3x3 convs with BatchNorm and ReLU; the shortcut is the identity, or a
    strided 1x1x1 conv where the shape changes), with widths ``TINY_WIDTHS`` scaled by
    ``width`` and strides ``TINY_STRIDES``. Feature maps at 8x32x32 input: layer1 4x8x8, layer2
    4x4x4, layer3 2x4x4, layer4 2x4x4 (16x64x64: 8x16x16 .. 4x8x8). About 0.65M parameters at width 1.

    Init as torchvision's video ResNets: Kaiming-normal (fan_out, ReLU) convs, BatchNorm weight 1 and
    bias 0. The last BatchNorm of each residual branch is not zero-initialised: with one block per
    stage the net is shallow enough to train from a plain init, and torchvision's video nets (used for
    the papers' settings) do not zero-init either, so both families start alike.
    """
    widths = [max(1, round(w * width)) for w in TINY_WIDTHS]
    stem = nn.Sequential(
        nn.Conv3d(in_channels, widths[0], kernel_size=3, stride=(1, 2, 2), padding=1, bias=False),
        nn.BatchNorm3d(widths[0]),
        nn.ReLU(inplace=True),
    )
    stages = []
    in_width = widths[0]
    for out_width, stride in zip(widths, TINY_STRIDES):
        shortcut = None
        if stride != (1, 1, 1) or in_width != out_width:
            shortcut = nn.Sequential(
                nn.Conv3d(in_width, out_width, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(out_width)
            )
        stages.append(nn.Sequential(BasicBlock(in_width, out_width, Conv3DSimple, stride, shortcut)))
        in_width = out_width
    backbone = Backbone(stem, stages)
    for module in backbone.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return backbone
