"""HDC: hierarchically decoupled spatial-temporal contrast (Zhang & Crandall, WACV 2022).

No code was released and only the paper's abstract could be checked, so everything below except
the three ideas themselves is **our reading** (docs/methods.md, "HDC (our reading)"):

1. Decoupling by augmentation. From two windows a, b of a video and two appearance transforms
   theta1, theta2: v1 = S(a; theta1), v2 = S(a; theta2), v3 = S(b; theta1).
   - Spatial contrast (SC) pairs (v1, v3): same appearance, other time, so what matches is what
     persists over time (appearance, scene).
   - Temporal contrast (TC) pairs (v1, v2): same frames, other appearance, so what matches is what
     belongs to the time window (motion). v3 (same appearance, other time) is a hard negative.
2. Hierarchy. An SC head and a TC head on each tapped stage l, one compound loss
       L = sum_l ( w^S_l L^S_l + w^T_l L^T_l ).
3. Instance-invariance re-weighting. Lower stages are less invariant to augmentation, their task is
   harder and their loss larger; re-weighting stops them dominating. Invariance of term j is
   iota_j = (1 + mean positive cosine) / 2, detached, smoothed by an EMA, and
       w_j = n * iota_j / sum_m iota_m.
   Alternatives: `uniform` (w = 1) and `learned` (uncertainty weighting, L = sum exp(-s_j) L_j + s_j).

Ablations are configs: `levels=("layer4",)` is single-level; `subtasks=("spatial",)` is SC only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hdc_lib.augment import TEMPORAL_NEGATIVES, reordered
from hdc_lib.contrastive import ContrastConfig, ContrastiveMethod, mean_across_ranks, positive_cosine
from hdc_lib.views import hdc_views

SUBTASKS = ("spatial", "temporal")
EXTRA_HARD_NEGATIVES = TEMPORAL_NEGATIVES


@dataclass
class HDCConfig(ContrastConfig):
    levels: tuple[str, ...] = ("layer2", "layer3", "layer4")
    subtasks: tuple[str, ...] = SUBTASKS
    weighting: Literal["uniform", "invariance", "learned"] = "invariance"
    invariance_momentum: float = 0.9          # EMA of the measured invariance
    tc_hard_negative: bool = True             # v3 as a hard negative of the temporal contrast
    extra_hard_negatives: tuple[str, ...] = ()  # v1 with frames "shuffled" and/or "reversed"

    def __post_init__(self):
        super().__post_init__()
        if not self.levels:
            raise ValueError("HDC needs at least one level")
        for name, allowed in (("subtasks", SUBTASKS), ("extra_hard_negatives", EXTRA_HARD_NEGATIVES)):
            bad = sorted(set(getattr(self, name)) - set(allowed))
            if bad:
                raise ValueError(f"{name}: {bad[0]!r} is not one of {list(allowed)}")
        if not self.subtasks:
            raise ValueError("HDC needs at least one subtask")
        if self.extra_hard_negatives and "temporal" not in self.subtasks:
            raise ValueError("extra_hard_negatives only apply to the temporal subtask")


class HDC(ContrastiveMethod):
    def __init__(self, cfg: HDCConfig | None = None):
        cfg = cfg or HDCConfig()
        self.terms = [f"{subtask}_{level}" for level in cfg.levels for subtask in cfg.subtasks]
        stages = {term: term.split("_", 1)[1] for term in self.terms}
        super().__init__(cfg, head_stages=stages, queues=tuple(self.terms))
        n = len(self.terms)
        self.register_buffer("invariance", torch.ones(n))
        self.register_buffer("invariance_initialised", torch.tensor(False))
        self.log_variance = nn.Parameter(torch.zeros(n)) if cfg.weighting == "learned" else None

    def trainable_parameters(self):
        """Parameter groups: the learned weighting's log-variances s_j get no weight decay (decay
        would pull every s_j, i.e. every weight exp(-s_j), towards 1 instead of its optimum log L_j)."""
        if self.log_variance is None:
            return super().trainable_parameters()
        others = [p for p in super().trainable_parameters() if p is not self.log_variance]
        return [{"params": others}, {"params": [self.log_variance], "weight_decay": 0.0}]

    def make_views(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """windows uint8 (B, 2, T, H, W, C) -> v1, v2, v3 and the optional temporal hard negatives."""
        views = hdc_views(windows, self.augment, generator=generator)
        views = {name: views[name] for name in ("v1", "v2", "v3")}
        for how in self.cfg.extra_hard_negatives:
            views[how] = reordered(views["v1"], how, generator)
        return views

    def _needed_views(self) -> list[str]:
        cfg = self.cfg
        needed = {"v1"}
        if "spatial" in cfg.subtasks or cfg.tc_hard_negative:
            needed.add("v3")
        if "temporal" in cfg.subtasks:
            needed.update({"v2", *cfg.extra_hard_negatives})
        return [v for v in ("v1", "v2", "v3", *EXTRA_HARD_NEGATIVES) if v in needed]

    def _encode_views(self, views: dict, momentum: bool) -> dict:
        """{term: {view: embedding}} from one backbone pass over every needed view (for the
        momentum encoder: with shuffle BN when configured, see `momentum_keys`)."""
        names = self._needed_views()

        def encode(*clips: torch.Tensor) -> dict:
            embeddings = self.encode(torch.cat(clips), tuple(self.terms), momentum)
            return {(term, view): part for term, z in embeddings.items()
                    for view, part in zip(names, z.split(clips[0].shape[0]))}

        clips = [views[v] for v in names]
        flat = self.momentum_keys(encode, *clips) if momentum else encode(*clips)
        return {term: {view: flat[term, view] for view in names} for term in self.terms}

    def forward(self, views: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        z = self._encode_views(views, momentum=False)
        self.update_momentum_encoder()
        k = z if self.momentum_encoder is None else self._encode_views(views, momentum=True)
        logs: dict = {}
        losses, invariances = [], []
        for term in self.terms:
            q, key = z[term], k[term]
            if term.startswith("spatial"):
                # SC: positives (v1, v3), in both directions.
                losses.append(self.contrast(term, [(q["v1"], key["v3"]), (q["v3"], key["v1"])],
                                            logs, queue=term))
                invariances.append(positive_cosine(q["v1"], q["v3"]))
            else:
                # TC: positives (v1, v2); hard negatives: the same video at another time (v3) and
                # v1's frames reordered, each row against its own.
                hard_views = (["v3"] if cfg.tc_hard_negative else []) + list(cfg.extra_hard_negatives)
                hard = torch.stack([key[v] for v in hard_views], dim=1) if hard_views else None
                losses.append(self.contrast(term, [(q["v1"], key["v2"]), (q["v2"], key["v1"])],
                                            logs, queue=term, hard_negatives=hard))
                invariances.append(positive_cosine(q["v1"], q["v2"]))
        losses = torch.stack(losses)
        loss = self._weighted_sum(losses, torch.stack(invariances).detach(), logs)
        if self.queue is not None:
            self.queue.enqueue(**{t: k[t]["v3" if t.startswith("spatial") else "v2"] for t in self.terms})
        logs["loss/total"] = loss.detach()
        return loss, logs

    def _weighted_sum(self, losses: torch.Tensor, cosine: torch.Tensor, logs: dict) -> torch.Tensor:
        """L = sum_j w_j L_j with the configured weighting; logs every weight and invariance."""
        n = len(self.terms)
        if self.training:
            # iota = (1 + cos) / 2 in [0, 1], averaged over ranks so every rank weighs alike.
            measured = mean_across_ranks((1 + cosine) / 2)
            m = self.cfg.invariance_momentum
            smoothed = m * self.invariance + (1 - m) * measured
            self.invariance.copy_(torch.where(self.invariance_initialised, smoothed, measured))
            self.invariance_initialised.fill_(True)
        if self.cfg.weighting == "uniform":
            weights = torch.ones_like(losses)
            loss = losses.sum()
        elif self.cfg.weighting == "invariance":
            # w_j = n * iota_j / sum_m iota_m
            weights = n * self.invariance / self.invariance.sum()
            loss = (weights * losses).sum()
        else:
            # Uncertainty weighting: L = sum_j exp(-s_j) L_j + s_j, s_j learned.
            weights = torch.exp(-self.log_variance)
            loss = (weights * losses + self.log_variance).sum()
        for j, term in enumerate(self.terms):
            logs[f"weight/{term}"] = weights[j].detach()
            logs[f"invariance/{term}"] = self.invariance[j].clone()
        return loss
