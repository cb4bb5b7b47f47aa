"""Frozen-backbone features of whole videos, and the kNN monitor training runs on them.

Every evaluation protocol (docs/methods.md, "Evaluation protocols") starts here: N uniformly spaced
clips per video, centre crop, no random augmentation, each stage's global average pool averaged
over the clips. The kNN monitor lives here rather than with the other protocols in `evaluate.py`
because training calls it between epochs, and evaluation in turn trains (fine-tuning):
features -> train -> evaluate keeps that one way.

- kNN: k = 20 neighbours by cosine similarity, votes weighted by exp(sim / 0.07).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hdc_lib.data.cache import atomic_write
from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.experiment import build_dataset
from hdc_lib.runtime import progress_bar
from hdc_lib.supervised import still


def eval_transform(method):
    """The deterministic test-time view: the method's augmentation's centre crop. A model trained
    on one repeated frame (the static control) is tested the same way, on one repeated frame."""
    if getattr(method.cfg, "static_frame", False):
        return lambda clips, **kw: method.augment.center(still(clips), **kw)
    return method.augment.center


@torch.no_grad()
def extract_features(backbone, dataset, transform, device, batch_size: int = 32,
                     stages: tuple[str, ...] | None = None, workers: int = 0,
                     progress: str | None = None) -> dict:
    """Video-level features: each stage's GAP averaged over the item's clips.

    Returns {"features": {stage: (N, C)}, "labels": (N,), "index": (N,)}, in dataset order.
    `progress`: the description of a bar over the videos (drawn on a terminal only).
    """
    was_training = backbone.training
    backbone.eval()
    stages = stages or (backbone.stage_names[-1],)
    feats = {s: [] for s in stages}
    labels, indices = [], []
    bar = progress_bar(progress is not None, total=len(dataset), desc=progress, unit="video")
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        video = batch["video"].to(device)                     # (B, K, T, H, W, C)
        b, k = video.shape[:2]
        clips = transform(video.flatten(0, 1))                # (B*K, C, T, h, w)
        maps = backbone.features(clips, stages=stages)
        for s in stages:
            feats[s].append(maps[s].mean(dim=(2, 3, 4)).view(b, k, -1).mean(1).float().cpu())
        labels.append(batch["label"])
        indices.append(batch["index"])
        bar.update(b)
    bar.close()
    backbone.train(was_training)
    return {"features": {s: torch.cat(v) for s, v in feats.items()},
            "labels": torch.cat(labels), "index": torch.cat(indices)}


def cached_features(cache_dir: Path | None, key: dict, compute) -> dict:
    """`compute()` once per key (a checkpoint's identity plus the extraction settings)."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"features_{digest}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    result = compute()
    atomic_write(path, lambda file: torch.save(result, file), sync=False)  # lost: computed again
    return result


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Weighted kNN: score(c) = sum over the k nearest bank items of class c of exp(sim / t)."""
    sims = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).t()
    top, idx = sims.topk(min(k, bank.shape[0]), dim=1)
    votes = torch.zeros(queries.shape[0], num_classes, dtype=sims.dtype)
    votes.scatter_add_(1, bank_labels[idx], torch.exp(top / temperature))
    return votes.argmax(dim=1)


def eval_datasets(cfg, num_clips: int, limit: int | None = None):
    """Train (bank / gallery) and test (queries) splits with N uniform clips per video."""
    sampler = UniformClipSampler(cfg.model.clip_frames, cfg.model.clip_stride, num_clips)
    splits = [build_dataset(cfg, train=t, clip_sampler=sampler) for t in (True, False)]
    if limit is not None:
        splits = [_evenly_spaced_subset(ds, limit) for ds in splits]
    return splits


def _evenly_spaced_subset(dataset, limit: int):
    """At most `limit` videos spread over the whole (class-sorted) list, deterministically."""
    if len(dataset) <= limit:
        return dataset
    keep = torch.linspace(0, len(dataset) - 1, limit).round().long().unique().tolist()
    subset = torch.utils.data.Subset(dataset, keep)
    subset.classes = dataset.classes
    return subset


def knn_monitor(cfg, method, ctx) -> float | None:
    """kNN action accuracy of the online backbone on held-out videos (rank 0; others wait)."""
    accuracy = None
    if ctx.is_main:
        bank, queries = eval_datasets(cfg, num_clips=1, limit=cfg.train.knn_videos)
        transform = eval_transform(method)
        backbone = method.backbone
        train = extract_features(backbone, bank, transform, ctx.device)
        test = extract_features(backbone, queries, transform, ctx.device)
        stage = backbone.stage_names[-1]
        predicted = knn_predict(train["features"][stage], train["labels"], test["features"][stage],
                                num_classes=len(bank.classes))
        accuracy = (predicted == test["labels"]).float().mean().item()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return accuracy
