"""The supervised reference: the same backbone trained on the labels (cross-entropy on one clip).

It is a reference row in every table (how far self-supervision gets from what labels give) and
the instrument that calibrates the toy world (`calibrate`: is motion learnable? how big is the
scene shortcut?). It has the methods' interface, so the one training loop trains it too.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.backbones import build_backbone
from hdc_lib.contrastive import ClipModelConfig
from hdc_lib.data.toyworld import ACTIONS, REVERSE, ToyWorld, draw_factors, render_video


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


# -- Calibration of the toy world: is it learnable, is its scene shortcut real, does it need time? --

def calibrate(*, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3,
              weight_decay: float = 0.05, clip_frames: int = 8, clip_stride: int = 2,
              crop_size: int = 32, crop_scale: tuple[float, float] = (0.5, 1.0),
              progress: bool = True, **world_args) -> dict:
    """Train the supervised tiny net three times: the three checks of docs/data.md, "Calibration".

    Worlds `ToyWorld(**world_args)` (biased, its `bias`) and the same with bias=0 (unbiased); they
    share every draw but the train scenes, so the test split (scenes uniform) is one and the same.
    Rendered in memory (numpy, no mp4 round trip). Each run trains `Supervised` (the tiny backbone
    + a linear layer, cross-entropy) on random `clip_frames`-frame windows at `clip_stride`,
    random-resized-cropped (area `crop_scale`) to `crop_size`; no flip, because a horizontal flip
    turns right into left and clockwise into anticlockwise. AdamW with a cosine schedule. Test:
    the middle window of each test video, whole frame resized to `crop_size`.

    Returns accuracies on the test split:
      unbiased      trained on the unbiased world: is motion learnable? (required: >= 0.85)
      biased        trained on the biased world: the shortcut's cost is unbiased - biased (>= 0.15)
      single_frame  trained and tested on one frame repeated (unbiased world): near chance; even
                    a probe that always named the right time-reversed pair would get only 1/2, as
                    a pair differs only in time (single_frame_pair: how often it names the pair)
    plus chance, the seconds of each training run and in total.
    """
    started = time.perf_counter()
    biased = ToyWorld(**world_args)
    unbiased = dataclasses.replace(biased, bias=0.0)
    rows = {world: draw_factors(world) for world in (unbiased, biased)}

    def render_split(world: ToyWorld, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [row for row in rows[world] if row["split"] == split]
        videos = np.stack([render_video(row, world)[0] for row in chosen])
        return torch.from_numpy(videos), torch.tensor([row["label"] for row in chosen])

    config = SupervisedConfig(
        augment=AugmentConfig(size=crop_size, scale=crop_scale, flip_p=0.0, jitter_p=0.0,
                              gray_p=0.0, blur_p=0.0),
        clip_frames=clip_frames, clip_stride=clip_stride)
    span = clip_stride * (clip_frames - 1) + 1
    test_videos, test_labels = render_split(unbiased, "test")

    def windows(videos: torch.Tensor, starts: torch.Tensor, single_frame: bool) -> torch.Tensor:
        """(B, 1, clip_frames, S, S, 3): the window at each start (or its first frame repeated)."""
        offsets = torch.arange(clip_frames) * (0 if single_frame else clip_stride)
        return videos[torch.arange(len(videos))[:, None], starts[:, None] + offsets][:, None]

    def train_and_test(train: tuple, single_frame: bool) -> tuple[torch.Tensor, float]:
        """Test-split predictions of a model trained on `train`, and the training seconds."""
        run_started = time.perf_counter()
        videos, labels = train
        torch.manual_seed(biased.seed)
        generator = torch.Generator().manual_seed(biased.seed)
        model = Supervised(config, num_classes=len(ACTIONS))
        steps_per_epoch = -(-len(videos) // batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
        last_start = videos.shape[1] - (1 if single_frame else span)
        model.train()
        for _ in tqdm(range(epochs), desc="calibration run", unit="epoch", disable=not progress):
            order = torch.randperm(len(videos), generator=generator)
            for batch in order.split(batch_size):
                starts = torch.randint(0, last_start + 1, (len(batch),), generator=generator)
                views = model.make_views(windows(videos[batch], starts, single_frame), generator)
                loss, _ = model({**views, "label": labels[batch]})
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        seconds = time.perf_counter() - run_started
        model.eval()
        with torch.no_grad():
            middle = torch.full((len(test_videos),), last_start // 2)
            clips = windows(test_videos, middle, single_frame)[:, 0]
            predictions = torch.cat([
                model.classifier(model.backbone(model.augment.center(chunk, crop_fraction=1.0)))
                .argmax(1) for chunk in clips.split(256)])
        return predictions, seconds

    train_unbiased = render_split(unbiased, "train")
    runs = {"unbiased": (train_unbiased, False), "biased": (render_split(biased, "train"), False),
            "single_frame": (train_unbiased, True)}
    result = {"chance": 1 / len(ACTIONS)}
    pair = torch.tensor([ACTIONS.index(REVERSE[a]) for a in ACTIONS])
    for name, (train, single_frame) in runs.items():
        predictions, seconds = train_and_test(train, single_frame)
        result[name] = (predictions == test_labels).float().mean().item()
        result[f"seconds_{name}"] = round(seconds, 1)
        if single_frame:
            named_pair = (predictions == test_labels) | (predictions == pair[test_labels])
            result["single_frame_pair"] = named_pair.float().mean().item()
    result["shortcut_cost"] = result["unbiased"] - result["biased"]
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
