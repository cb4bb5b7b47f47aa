"""The coupled baseline: spatio-temporal features learned "as a whole" (CVRL/MoCo style).

One projection head on the last stage. The positive pair is two clips of the same video that differ
in both time (two windows a, b) and appearance (independent augmentations theta2, theta1): the
views (v2, v3) of docs/methods.md, "Coupled baseline". Loss = InfoNCE, symmetrised over the
two views.

`extra_hard_negatives` gives the baseline the temporal hard negatives HDC's temporal contrast can
have, built the same way: clip a with its frames reversed or shuffled, a hard negative of both
directions, each row against its own (as HDC's are made from v1). It is the control that tells a
gain of decoupling from a gain of the hard negatives themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from hdc_lib.contrastive import ContrastConfig, ContrastiveMethod
from hdc_lib.views import TEMPORAL_NEGATIVES, reordered


@dataclass
class CoupledConfig(ContrastConfig):
    level: str = "layer4"   # the stage the single head sits on
    extra_hard_negatives: tuple[str, ...] = ()  # the positive "shuffled" and/or "reversed"

    def __post_init__(self):
        super().__post_init__()
        bad = sorted(set(self.extra_hard_negatives) - set(TEMPORAL_NEGATIVES))
        if bad:
            raise ValueError(f"extra_hard_negatives: {bad[0]!r} is not one of {list(TEMPORAL_NEGATIVES)}")


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
        views = {"a": views[:, 0], "b": views[:, 1]}
        for how in self.cfg.extra_hard_negatives:
            views[how] = reordered(views["a"], how, generator)
        return views

    def forward(self, views: dict) -> tuple[torch.Tensor, dict]:
        clips = [views[n] for n in self._clip_names()]
        z = self._embed(*clips)
        self.update_momentum_encoder()
        k = z if self.momentum_encoder is None else self.momentum_keys(partial(self._embed, momentum=True), *clips)
        hard = (torch.stack([k[how] for how in self.cfg.extra_hard_negatives], dim=1)
                if self.cfg.extra_hard_negatives else None)
        logs: dict = {}
        # L = 1/2 [ InfoNCE(z_a, k_b) + InfoNCE(z_b, k_a) ]
        loss = self.contrast("clip", [(z["a"], k["b"]), (z["b"], k["a"])], logs, queue="clip",
                             hard_negatives=hard)
        if self.queue is not None:
            self.queue.enqueue(clip=k["b"])
        logs["loss/total"] = loss.detach()
        return loss, logs

    def _clip_names(self) -> list[str]:
        return ["a", "b", *self.cfg.extra_hard_negatives]

    def _embed(self, *clips: torch.Tensor, momentum: bool = False) -> dict:
        """{clip name: embedding (B, D)} of clips a, b (and the hard negatives), in one backbone pass."""
        z = self.encode(torch.cat(clips), ("clip",), momentum)["clip"]
        return dict(zip(self._clip_names(), z.split(clips[0].shape[0])))
