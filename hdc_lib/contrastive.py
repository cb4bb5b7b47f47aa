"""What the three methods share: an online encoder (backbone + named projection heads), an optional
momentum (EMA) encoder with key queues, and one `contrast` call that computes an InfoNCE term and
logs it.

Negatives come from the batch by default (`negatives="batch"`): keys come from the online encoder,
and under DDP the keys of all ranks are gathered (with gradient for the local part) so the number
of negatives is the global batch. With `queue_size > 0` the method becomes MoCo-style: keys come
from a momentum copy of the encoder, negatives from a queue of past keys (under DDP the queue
receives every rank's keys). `negatives="queue"` is MoCo v2 exactly: row i contrasts its own key
with the queue only; `"both"` adds the batch's other keys as further negatives.

`shuffle_bn_groups = G > 0` runs the momentum encoder's key pass with shuffle BN (moco.py): a
permutation of the global batch in G groups with their own BatchNorm statistics, so a key is not
normalised over the same videos as its own query; 0 runs it on each rank's whole batch at once.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.backbones import build_backbone
from hdc_lib.config import ConfigError
from hdc_lib.heads import ProjectionHead
from hdc_lib.losses import contrastive_accuracy, contrastive_logits, info_nce_from_logits, mean_similarities
from hdc_lib.moco import KeyQueue, ema_update_, gather_with_gradient, shuffle_bn_forward


@dataclass
class ClipModelConfig:
    """What any model of clips needs: a backbone, the spatial augmentation and the clip shape.

    Defaults are the toy (CPU) scale; paper presets override them.
    """

    backbone: str = "tiny"
    backbone_kwargs: dict = field(default_factory=dict)
    # Toy scale: 32 px crops of at least half the frame (small objects must survive the crop); no
    # horizontal flip, which would turn the toy world's "right" into "left" and "clockwise" into
    # "anticlockwise"; a random RGB order (p 0.8), because the toy objects' saturated colours
    # survive a +-0.1 hue jitter and would identify a video across views (results/toyworld_log.md).
    # Paper presets give the full augmentation and no channel shuffle.
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(size=32, scale=(0.5, 1.0), flip_p=0.0, channel_shuffle_p=0.8))
    clip_frames: int = 8          # frames per view T
    clip_stride: int = 2          # temporal stride between the frames of a view

    def __post_init__(self):
        if self.clip_frames < 1 or self.clip_stride < 1:
            raise ValueError("clip_frames and clip_stride must be >= 1")


@dataclass
class ContrastConfig(ClipModelConfig):
    """Settings every contrastive method has."""

    embed_dim: int = 128          # projection output
    hidden_dim: int | None = None  # projection hidden width; None = the tapped stage's channels
    temperature: float = 0.1
    speed_strides: tuple[int, ...] = ()  # temporal augmentation: each window draws its stride here
    # How far apart the two windows start: None = disjoint (docs/methods.md, "Views"; the paper
    # presets); (lo, hi) = a start offset of lo..hi frames, so the windows overlap and differ by a
    # little motion. Toy scale: 2-8 frames, because two disjoint halves of a 32-frame toy video are
    # told apart by where the object is, which one frame shows (results/toyworld_log.md).
    window_offset: tuple[int, int] | None = (2, 8)
    queue_size: int = 0           # 0: in-batch negatives; > 0: MoCo queue + momentum encoder
    momentum: float = 0.999       # EMA of the momentum encoder
    # Columns of row i besides its positive: "batch" = the batch's other keys (needs no queue),
    # "queue" = the queue only (MoCo v2), "both" = both. None: "queue" with a queue, else "batch".
    negatives: Literal["queue", "batch", "both"] | None = None
    shuffle_bn_groups: int = 0    # key pass in this many shuffled BatchNorm groups; 0 = one pass

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.queue_size < 0 or not 0.0 <= self.momentum < 1.0:
            raise ValueError("queue_size must be >= 0 and momentum in [0, 1)")
        if self.negatives is None:
            self.negatives = "queue" if self.queue_size else "batch"
        if self.negatives == "batch" and self.queue_size:
            raise ValueError(f"negatives='batch' reads no queue, but queue_size={self.queue_size}: "
                             "use negatives 'queue' or 'both', or queue_size=0")
        if self.negatives != "batch" and not self.queue_size:
            raise ValueError(f"negatives={self.negatives!r} needs a queue: set queue_size > 0")
        if self.shuffle_bn_groups < 0:
            raise ValueError(f"shuffle_bn_groups must be >= 0, got {self.shuffle_bn_groups}")
        if self.shuffle_bn_groups and not self.queue_size:
            raise ValueError("shuffle_bn_groups shuffles the momentum encoder's key pass, which only "
                             "a queue has: set queue_size > 0 or shuffle_bn_groups=0")


class ContrastiveMethod(nn.Module):
    """Base class: subclasses name their heads (head name -> backbone stage) and their queues."""

    def __init__(self, cfg: ContrastConfig, head_stages: dict[str, str], queues: tuple[str, ...]):
        super().__init__()
        self.cfg = cfg
        backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
        unknown = sorted(set(head_stages.values()) - set(backbone.stage_names))
        if unknown:
            raise ConfigError(f"model: {cfg.backbone} has no stage {unknown[0]!r}; "
                              f"stages: {backbone.stage_names}")
        heads = nn.ModuleDict({
            name: ProjectionHead(backbone.channels[stage], cfg.hidden_dim, cfg.embed_dim)
            for name, stage in head_stages.items()
        })
        self.head_stages = dict(head_stages)
        self.online = nn.ModuleDict({"backbone": backbone, "heads": heads})
        self.augment = SpatialAugment(cfg.augment)
        self.momentum_encoder: nn.ModuleDict | None = None
        self.queue: KeyQueue | None = None
        # Where shuffle BN draws its permutations: the training loop sets its per-step generator;
        # None (a method used outside the loop) draws from torch's global generator.
        self.key_shuffle_generator: torch.Generator | None = None
        if cfg.queue_size:
            self.momentum_encoder = copy.deepcopy(self.online).requires_grad_(False)
            self.queue = KeyQueue(cfg.queue_size, {name: cfg.embed_dim for name in queues})

    # -- what the data layer must deliver ------------------------------------------------------
    def clip_request(self) -> dict:
        """Clips per video, frames per clip and stride that the data sampler must deliver: by
        default two windows that overlap only when the video is too short to hold both
        (docs/methods.md, "Views"); with `window_offset`, two windows that many frames apart."""
        stride = tuple(self.cfg.speed_strides) or self.cfg.clip_stride
        placement = ({"disjoint": True} if self.cfg.window_offset is None
                     else {"offset": tuple(self.cfg.window_offset)})
        return {"num_clips": 2, "num_frames": self.cfg.clip_frames, "stride": stride, **placement}

    @property
    def backbone(self) -> nn.Module:
        return self.online["backbone"]

    def trainable_parameters(self):
        """Parameters (or parameter groups) the optimiser updates; the momentum encoder follows by EMA."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- encoders ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, heads: tuple[str, ...], momentum: bool = False,
               detached: frozenset[str] = frozenset()) -> dict:
        """Embeddings z[name] = head_name(f_stage(x)) for the named heads, from one backbone pass;
        the heads named in `detached` read the maps without gradient (they train, the backbone not)."""
        encoder = self.momentum_encoder if momentum else self.online
        stages = {self.head_stages[name] for name in heads}
        maps = encoder["backbone"].features(x, stages=tuple(stages))
        return {name: encoder["heads"][name](maps[self.head_stages[name]].detach() if name in detached
                                             else maps[self.head_stages[name]]) for name in heads}

    @torch.no_grad()
    def momentum_keys(self, encode: Callable[..., dict], *clips: torch.Tensor) -> dict:
        """`encode(*clips)` -> {name: (B, ...)}, the method's key pass by the momentum encoder, run
        with shuffle BN when `shuffle_bn_groups` > 0 (each clip (B, ...) is one view of the B
        videos; see `moco.shuffle_bn_forward`), else on the whole batch at once. No gradient.

        Shuffle BN draws its permutation from the method's `key_shuffle_generator` when the
        training loop has set one (train.py sets its per-step generator, which every checkpoint
        saves, so a resumed run draws the same permutations on CPU and CUDA), else from torch's
        global generator (a method used outside the loop)."""
        if self.cfg.shuffle_bn_groups:
            return shuffle_bn_forward(encode, clips, self.cfg.shuffle_bn_groups, self.key_shuffle_generator)
        return encode(*clips)

    @torch.no_grad()
    def update_momentum_encoder(self) -> None:
        """EMA step theta_k <- m theta_k + (1 - m) theta_q; a no-op in in-batch mode."""
        if self.momentum_encoder is not None:
            ema_update_(self.momentum_encoder, self.online, self.cfg.momentum)

    # -- the contrastive term ------------------------------------------------------------------
    def contrast(self, name: str, pairs: list[tuple[torch.Tensor, torch.Tensor]], logs: dict,
                 queue: str | None = None, hard_negatives: torch.Tensor | None = None,
                 extra_positives: torch.Tensor | None = None) -> torch.Tensor:
        """InfoNCE of each (query (B, D), positive key (B, D)) pair, averaged, logged under `name`.

        The logits are `losses.contrastive_logits`'s; which candidates row i has, by `negatives`:
          "batch": every key of the (global) batch
          "queue": its own key, then the queue                             (MoCo v2)
          "both":  every key of the (global) batch, then the queue
        then its own hard negatives h_i (`hard_negatives` (B, M, D)) in every mode.
        `extra_positives` (B, queue size) bool marks queue entries that also count as positives
        (DCLR's cross-video search); a row's loss is then -log of its summed positive probability.
        A symmetrised loss passes both directions, [(z_a, k_b), (z_b, k_a)], and is their mean.
        `queue` names the queue the pairs read; in-batch methods (no queue) ignore it.
        """
        terms = [self._info_nce(q, k, queue, hard_negatives, extra_positives) for q, k in pairs]
        loss = torch.stack([t[0] for t in terms]).mean()
        # Logs stay tensors (no host sync per term on a GPU); the training loop reads them.
        logs[f"loss/{name}"] = loss.detach()
        for stat in ("acc", "pos_sim", "neg_sim"):
            logs[f"{stat}/{name}"] = torch.stack([t[1][stat] for t in terms]).mean()
        return loss

    def _info_nce(self, query, key, queue, hard_negatives, extra_positives):
        if queue is None and self.queue is not None:
            raise ValueError(f"contrastive.py: negatives={self.cfg.negatives!r} needs the name of the queue to read")
        batch_negatives = self.cfg.negatives != "queue"
        # Under DDP the batch negatives are every rank's keys (gathered with gradient).
        keys, own_keys_start = gather_keys(key) if batch_negatives else (key, 0)
        logits, positive_mask = contrastive_logits(
            query, keys, self.cfg.temperature, batch_negatives=batch_negatives, own_keys_start=own_keys_start,
            queue=None if self.queue is None else self.queue[queue], extra_positives=extra_positives,
            hard_negatives=hard_negatives)
        loss = info_nce_from_logits(logits, positive_mask)
        with torch.no_grad():
            positive, negative = mean_similarities(logits, positive_mask, self.cfg.temperature)
            stats = {"acc": contrastive_accuracy(logits, positive_mask), "pos_sim": positive, "neg_sim": negative}
        return loss, stats


def gather_keys(key: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' keys and where this rank's rows start.

    The gather is differentiable (`moco.gather_with_gradient`), so every rank's loss sends gradient
    to the keys it borrowed: the DDP-averaged gradient equals that of the loss over the global batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return key, 0
    return gather_with_gradient(key), dist.get_rank() * key.shape[0]


def positive_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of matching rows: how invariant an embedding is to a view change."""
    return F.cosine_similarity(a, b, dim=1).mean()


def mean_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """Average of a (detached) statistic over all ranks; the tensor itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()
