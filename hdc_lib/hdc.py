"""HDC: hierarchically decoupled spatial-temporal contrast (Zhang & Crandall, WACV 2022).

No code was released and only the paper's abstract could be checked, so everything below except
the three ideas themselves is **our reading** (docs/methods.md, "HDC (our reading)"):

1. Decoupling by augmentation. From windows a, b of a video and appearance transforms theta1,
   theta2: v1 = S(a; theta1), v2 = S(a; theta2), v3 = S(b; theta1) (views.py).
   - Temporal contrast (TC) pairs (v1, v2): same frames, other appearance, so what matches is what
     belongs to the time window (motion). v3 (same appearance, other time) is a hard negative.
   - Spatial contrast (SC) pairs two clips whose frames differ in time, so what matches is what
     persists over time (appearance, scene). Which pair is a reading (`sc_pair`, views.SC_PAIRS):
     the first one, (v1, v3), makes SC's positive TC's hard negative, and the two subtasks then
     pull and push the same pair; results/hdc_readings.md measures the readings as arms.
   `sc_detach` gives SC's heads detached features (a diagnostic: SC trains its heads, not the backbone).
2. Hierarchy. An SC head and a TC head on each tapped stage l, one compound loss
       L = sum_l ( w^S_l L^S_l + w^T_l L^T_l ).
3. Instance-invariance re-weighting. Lower stages are less invariant to augmentation, their task is
   harder and their loss larger; re-weighting stops them dominating. Invariance of term j is
   iota_j = (1 + mean positive cosine) / 2, detached, smoothed by an EMA. Weightings:
   - `invariance`: w_j = n * iota_j / sum_m iota_m over all n terms (the first reading; the iota
     lie within a few hundredths of each other, so the weights stay within about 1.2x);
   - `invariance_levels`: within each subtask s, over its L_s levels,
       w_{s,l} = L_s * exp(iota_{s,l} / t) / sum_m exp(iota_{s,m} / t),
     a softmax whose temperature t (`weight_temperature`) lets the weights really differ;
   - `uniform` (w = 1) and `learned` (uncertainty weighting, L = sum exp(-s_j) L_j + s_j).

Ablations are configs: `levels=("layer4",)` is single-level; `subtasks=("spatial",)` is SC only.
A key that a configuration would ignore (an SC reading without SC, a temperature without the
weighting that reads it) is an error, so a run's record lists only knobs that acted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hdc_lib.contrastive import ContrastConfig, ContrastiveMethod, mean_across_ranks, positive_cosine
from hdc_lib.views import SC_PAIRS, TEMPORAL_NEGATIVES, hdc_views, reordered, windows_needed

SUBTASKS = ("spatial", "temporal")
EXTRA_HARD_NEGATIVES = TEMPORAL_NEGATIVES
WEIGHTINGS = ("uniform", "invariance", "invariance_levels", "learned")
DEFAULT_SC_PAIR = "same_appearance"
DEFAULT_WEIGHT_TEMPERATURE = 0.01   # on iota = (1 + cos) / 2, fixed before the screening (results/hdc_readings.md)
VIEW_ORDER = ("v1", "v2", "v3", *EXTRA_HARD_NEGATIVES, "v4", "v2_shuffled", "v3_shuffled")


@dataclass
class HDCConfig(ContrastConfig):
    levels: tuple[str, ...] = ("layer2", "layer3", "layer4")
    subtasks: tuple[str, ...] = SUBTASKS
    weighting: Literal["uniform", "invariance", "invariance_levels", "learned"] = "invariance"
    invariance_momentum: float = 0.9          # EMA of the measured invariance
    weight_temperature: float | None = None   # t of `invariance_levels` (None: DEFAULT_WEIGHT_TEMPERATURE)
    tc_hard_negative: bool = True             # v3 as a hard negative of the temporal contrast
    extra_hard_negatives: tuple[str, ...] = ()  # v1 with frames "shuffled" and/or "reversed"
    sc_pair: str | None = None                # SC's reading, views.SC_PAIRS (None: DEFAULT_SC_PAIR, when there is SC)
    sc_detach: bool = False                   # SC's heads see detached features

    def __post_init__(self):
        super().__post_init__()
        if not self.levels:
            raise ValueError("HDC needs at least one level")
        for name, allowed in (("subtasks", SUBTASKS), ("extra_hard_negatives", EXTRA_HARD_NEGATIVES),
                              ("weighting", WEIGHTINGS)):
            values = getattr(self, name)
            bad = sorted(set([values] if isinstance(values, str) else values) - set(allowed))
            if bad:
                raise ValueError(f"{name}: {bad[0]!r} is not one of {list(allowed)}")
        if not self.subtasks:
            raise ValueError("HDC needs at least one subtask")
        if "temporal" not in self.subtasks and (self.extra_hard_negatives or not self.tc_hard_negative):
            raise ValueError("extra_hard_negatives and tc_hard_negative act on the temporal subtask, "
                             f"which subtasks {list(self.subtasks)} leave out: remove them")
        if "spatial" in self.subtasks:
            self.sc_pair = self.sc_pair or DEFAULT_SC_PAIR
        elif self.sc_pair is not None or self.sc_detach:
            raise ValueError(f"sc_pair and sc_detach act on the spatial subtask, which subtasks "
                             f"{list(self.subtasks)} leave out: remove them")
        if self.sc_pair is not None and self.sc_pair not in SC_PAIRS:
            raise ValueError(f"sc_pair: {self.sc_pair!r} is not one of {list(SC_PAIRS)}")
        if self.weighting == "invariance_levels":
            self.weight_temperature = self.weight_temperature or DEFAULT_WEIGHT_TEMPERATURE
            if self.weight_temperature <= 0:
                raise ValueError(f"weight_temperature must be > 0, got {self.weight_temperature}")
        elif self.weight_temperature is not None:
            raise ValueError(f"weight_temperature is read only by weighting 'invariance_levels', "
                             f"not {self.weighting!r}: remove it")


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

    def clip_request(self) -> dict:
        """The two windows of docs/methods.md, "Views", or three for the "third_window" reading."""
        return {**super().clip_request(), "num_clips": windows_needed(self.cfg.sc_pair or DEFAULT_SC_PAIR)}

    def trainable_parameters(self):
        """Parameter groups: the learned weighting's log-variances s_j get no weight decay (decay
        would pull every s_j, i.e. every weight exp(-s_j), towards 1 instead of its optimum log L_j)."""
        if self.log_variance is None:
            return super().trainable_parameters()
        others = [p for p in super().trainable_parameters() if p is not self.log_variance]
        return [{"params": others}, {"params": [self.log_variance], "weight_decay": 0.0}]

    def make_views(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """windows uint8 (B, K, T, H, W, C) -> v1, v2, v3, SC's views and the temporal hard negatives."""
        views = hdc_views(windows, self.augment, generator=generator,
                          sc_pair=self.cfg.sc_pair or DEFAULT_SC_PAIR)
        views = {name: view for name, view in views.items() if name in VIEW_ORDER}
        for how in self.cfg.extra_hard_negatives:
            views[how] = reordered(views["v1"], how, generator)
        return views

    def _needed_views(self) -> list[str]:
        cfg = self.cfg
        needed = {"v1"}
        if "spatial" in cfg.subtasks:
            needed.update(SC_PAIRS[cfg.sc_pair])
        if "temporal" in cfg.subtasks:
            needed.update({"v2", *cfg.extra_hard_negatives, *(["v3"] if cfg.tc_hard_negative else [])})
        return [v for v in VIEW_ORDER if v in needed]

    def _encode_views(self, views: dict, momentum: bool) -> dict:
        """{term: {view: embedding}} from one backbone pass over every needed view (for the
        momentum encoder: with shuffle BN when configured, see `momentum_keys`)."""
        names = self._needed_views()

        def encode(*clips: torch.Tensor) -> dict:
            # with `sc_detach`, SC's heads read the maps without gradient: SC trains its heads only
            detached = frozenset(t for t in self.terms if t.startswith("spatial")) if self.cfg.sc_detach else frozenset()
            embeddings = self.encode(torch.cat(clips), tuple(self.terms), momentum, detached)
            return {(term, view): part for term, z in embeddings.items()
                    for view, part in zip(names, z.split(clips[0].shape[0]))}

        clips = [views[v] for v in names]
        flat = self.momentum_keys(encode, *clips) if momentum else encode(*clips)
        return {term: {view: flat[term, view] for view in names} for term in self.terms}

    def embeddings(self, views: dict, step: bool = True) -> tuple[dict, dict]:
        """Queries z and keys k, {term: {view: (B, D)}}. A training `step` moves the momentum
        encoder between the query and the key pass (MoCo); the diagnostics pass step=False."""
        z = self._encode_views(views, momentum=False)
        if step:
            self.update_momentum_encoder()
        return z, (z if self.momentum_encoder is None else self._encode_views(views, momentum=True))

    def term_losses(self, z: dict, k: dict, logs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Each term's InfoNCE (n,) and the mean cosine of its positive pairs (n,)."""
        cfg = self.cfg
        losses, cosines = [], []
        for term in self.terms:
            q, key = z[term], k[term]
            if term.startswith("spatial"):
                # SC: positives (p, r) of the reading, in both directions.
                p, r = SC_PAIRS[cfg.sc_pair]
                losses.append(self.contrast(term, [(q[p], key[r]), (q[r], key[p])], logs, queue=term))
                cosines.append(positive_cosine(q[p], q[r]))
            else:
                # TC: positives (v1, v2); hard negatives: the same video at another time (v3) and
                # v1's frames reordered, each row against its own.
                hard_views = (["v3"] if cfg.tc_hard_negative else []) + list(cfg.extra_hard_negatives)
                hard = torch.stack([key[v] for v in hard_views], dim=1) if hard_views else None
                losses.append(self.contrast(term, [(q["v1"], key["v2"]), (q["v2"], key["v1"])],
                                            logs, queue=term, hard_negatives=hard))
                cosines.append(positive_cosine(q["v1"], q["v2"]))
        return torch.stack(losses), torch.stack(cosines)

    def forward(self, views: dict) -> tuple[torch.Tensor, dict]:
        logs: dict = {}
        z, k = self.embeddings(views)
        losses, cosines = self.term_losses(z, k, logs)
        loss = self._weighted_sum(losses, cosines.detach(), logs)
        if self.queue is not None:
            sc_key = SC_PAIRS[self.cfg.sc_pair][1] if self.cfg.sc_pair else None
            self.queue.enqueue(**{t: k[t][sc_key if t.startswith("spatial") else "v2"] for t in self.terms})
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
        elif self.cfg.weighting == "invariance_levels":
            weights = self.level_weights()
            loss = (weights * losses).sum()
        else:
            # Uncertainty weighting: L = sum_j exp(-s_j) L_j + s_j, s_j learned.
            weights = torch.exp(-self.log_variance)
            loss = (weights * losses + self.log_variance).sum()
        for j, term in enumerate(self.terms):
            logs[f"weight/{term}"] = weights[j].detach()
            logs[f"invariance/{term}"] = self.invariance[j].clone()
        return loss

    def level_weights(self) -> torch.Tensor:
        """`invariance_levels`: within each subtask s, over its L_s levels,
        w_{s,l} = L_s * softmax_l(iota_{s,l} / t), so each subtask keeps the total weight L_s."""
        weights = torch.empty_like(self.invariance)
        for subtask in self.cfg.subtasks:
            rows = [j for j, term in enumerate(self.terms) if term.startswith(subtask)]
            iota = self.invariance[rows]
            weights[rows] = len(rows) * torch.softmax(iota / self.cfg.weight_temperature, dim=0)
        return weights


def subtask_gradient_cosine(model: HDC, views: dict) -> dict[str, float]:
    """cos(grad L^S_l, grad L^T_l) on the shared backbone's parameters, per level l (E1 of
    results/hdc_readings.md): a clearly negative cosine means that a step of one subtask undoes the
    other's. Runs a training-mode forward (BatchNorm on batch statistics, as in training) without
    a step: no weight, momentum encoder, queue or invariance changes (BatchNorm's running statistics
    do move)."""
    if set(model.cfg.subtasks) != set(SUBTASKS):
        raise ValueError("subtask_gradient_cosine needs both subtasks")
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    losses, _ = model.term_losses(*model.embeddings(views, step=False), logs={})
    out = {}
    for level in model.cfg.levels:
        grads = []
        for subtask in SUBTASKS:
            loss = losses[model.terms.index(f"{subtask}_{level}")]
            parts = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            grads.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                    for g, p in zip(parts, params)]))
        out[level] = float(F.cosine_similarity(grads[0], grads[1], dim=0))
    return out
