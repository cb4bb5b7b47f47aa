"""The supervised reference: the same backbone trained on the labels (cross-entropy on one clip).

It is a reference row in every table (how far self-supervision gets from what labels give) and,
with its static-frame control, the reproduction's calibration of the toy world (is motion
learnable? how big is the scene shortcut?: docs/data.md, "Calibration"). It has the methods'
interface, so the one training loop trains it too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hdc_lib.augment import SpatialAugment
from hdc_lib.backbones import build_backbone
from hdc_lib.contrastive import ClipModelConfig


@dataclass
class SupervisedConfig(ClipModelConfig):
    dropout: float = 0.0
    # Train (and, in the reproduction, test) on clips of one frame repeated: the control that
    # measures how much of the task one frame solves (the toy world wants close to chance).
    static_frame: bool = False


def still(clips: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, C) clips -> their first frame repeated T times: no motion left."""
    return clips[:, :1].expand_as(clips)


class Supervised(nn.Module):
    def __init__(self, cfg: SupervisedConfig | None, num_classes: int):
        super().__init__()
        self.cfg = cfg = cfg or SupervisedConfig()
        self.online = nn.ModuleDict({"backbone": build_backbone(cfg.backbone, **cfg.backbone_kwargs)})
        last = self.backbone.stage_names[-1]
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout),
                                        nn.Linear(self.backbone.channels[last], num_classes))
        self.augment = SpatialAugment(cfg.augment)

    @property
    def backbone(self) -> nn.Module:
        return self.online["backbone"]

    def clip_request(self) -> dict:
        return {"num_clips": 1, "num_frames": self.cfg.clip_frames, "stride": self.cfg.clip_stride}

    def trainable_parameters(self):
        return list(self.parameters())

    def make_views(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        clips = still(windows[:, 0]) if self.cfg.static_frame else windows[:, 0]
        clip, _ = self.augment(clips, generator=generator)
        return {"clip": clip}

    def forward(self, views: dict) -> tuple[torch.Tensor, dict]:
        logits = self.classifier(self.backbone(views["clip"]))
        labels = views["label"]
        loss = F.cross_entropy(logits, labels)
        logs = {"loss/total": loss.detach(),
                "acc/supervised": (logits.argmax(1) == labels).float().mean()}
        return loss, logs

