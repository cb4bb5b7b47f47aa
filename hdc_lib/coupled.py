"""The coupled baseline: spatio-temporal features learned "as a whole" (CVRL/MoCo style).

One projection head on the last stage. The positive pair is two clips of the same video that differ
in both time (two windows a, b) and appearance (independent augmentations theta2, theta1): the
views (v2, v3) of docs/methods.md, "Coupled baseline". Loss = InfoNCE, symmetrised over the
two views.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hdc_lib.contrastive import ContrastConfig, ContrastiveMethod


@dataclass
class CoupledConfig(ContrastConfig):
    level: str = "layer4"   # the stage the single head sits on


class Coupled(ContrastiveMethod):
    def __init__(self, cfg: CoupledConfig | None = None):
        cfg = cfg or CoupledConfig()
        super().__init__(cfg, head_stages={"clip": cfg.level}, queues=("clip",))

    def make_views(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """windows uint8 (B, 2, T, H, W, C) -> two independently augmented clips of windows a, b.

        One augmentation call for both windows (rows a0, b0, a1, b1, ...), each row its own draw.
        """
        views, _ = self.augment(windows.flatten(0, 1), generator=generator)
        views = views.unflatten(0, (windows.shape[0], 2))
        return {"a": views[:, 0], "b": views[:, 1]}

    def forward(self, views: dict) -> tuple[torch.Tensor, dict]:
        batch = views["a"].shape[0]
        both = torch.cat([views["a"], views["b"]])
        z_a, z_b = self.encode(both, ("clip",))["clip"].split(batch)
        self.update_momentum_encoder()
        if self.momentum_encoder is None:
            k_a, k_b = z_a, z_b
        else:
            with torch.no_grad():
                k_a, k_b = self.encode(both, ("clip",), momentum=True)["clip"].split(batch)
        logs: dict = {}
        # L = 1/2 [ InfoNCE(z_a, k_b) + InfoNCE(z_b, k_a) ]
        loss = self.contrast("clip", [(z_a, k_b), (z_b, k_a)], logs, queue="clip")
        if self.queue is not None:
            self.queue.enqueue(clip=k_b)
        logs["loss/total"] = loss.detach()
        return loss, logs
