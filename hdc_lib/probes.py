"""Toy-world probes: what a frozen backbone knows about each factor of the world, and where it looks.

The toy world records every factor of every video (manifest.csv) and the moving object's mask in
every frame (masks.npz), so the papers' claims become measurements (docs/methods.md, "Toy-world
probes"):

- action (motion) accuracy: a linear probe fitted on the (scene-biased) train split, tested on the
  scene-unbiased test split. A backbone that reads the background instead of the motion loses here.
- object and scene accuracy: linear probes fitted on one half of the test split and tested on the
  other (and the reverse, averaged): how much appearance and background the features carry.
- retrieval R@k of test videos among train videos, by action.
- foreground activation ratio: share of activation-map mass on the moving object divided by the
  object's share of the frame (1 = no preference; above 1 = the model looks at the mover).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.data.toyworld import Masks, load_manifest
from hdc_lib.dclr import activation_map
from hdc_lib.evaluate import linear_probe, retrieval_recall
from hdc_lib.features import eval_datasets, extract_features


def relative_path(dataset, position: int) -> str:
    """A dataset item's video path relative to the world's videos/ folder (the manifest's key)."""
    path = Path(dataset.samples[position][0])
    return f"{path.parent.name}/{path.name}"


def half_split_probe(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Linear-probe accuracy with two-fold cross-fitting over alternate items (fit A test B, fit B
    test A, averaged): for factors that only the test split has unbiased."""
    a = torch.arange(len(labels)) % 2 == 0
    b = ~a
    return 0.5 * (linear_probe(features[a], labels[a], features[b], labels[b])
                  + linear_probe(features[b], labels[b], features[a], labels[a]))


@torch.no_grad()
def foreground_ratio(backbone, dataset, masks: Masks, transform, device, sampler: UniformClipSampler,
                     batch_size: int = 32) -> float:
    """Mean over videos of (sum_p A(p) m(p) / sum_p A(p)) / mean_p m(p).

    A is the last stage's activation map of the clip, m(p) the fraction of map cell p that the
    object covers (its frame masks average-pooled to the map's grid). The transform must keep the
    whole frame (crop_fraction=1) so masks and maps are aligned.
    """
    was_training = backbone.training
    backbone.eval()
    ratios = []
    last = backbone.stage_names[-1]
    for start in range(0, len(dataset), batch_size):
        positions = range(start, min(start + batch_size, len(dataset)))
        items = [dataset[i] for i in positions]
        clips = transform(torch.stack([it["video"][0] for it in items]).to(device))
        amap = activation_map(backbone.features(clips, stages=(last,))[last]).float()  # (B, T', H', W')
        for row, item in enumerate(items):
            # the item's own index: an unreadable video is replaced by the next readable one
            frames = masks[relative_path(dataset, int(item["index"]))]
            indices = sampler(len(frames))[0]
            mask = torch.from_numpy(frames[indices]).float()[None, None].to(device)
            coverage = F.adaptive_avg_pool3d(mask, amap.shape[1:])[0, 0]
            share = coverage.mean()
            if share > 0 and amap[row].sum() > 0:
                ratios.append(((amap[row] * coverage).sum() / amap[row].sum() / share).item())
    backbone.train(was_training)
    return float(np.mean(ratios)) if ratios else float("nan")


def toy_probes(cfg, backbone, transform, device, num_clips: int = 4) -> dict[str, float]:
    """Every toy-world probe of one backbone, as a flat dict of numbers."""
    world = Path(cfg.data.root)
    train_set, test_set = eval_datasets(cfg, num_clips=num_clips)
    train = extract_features(backbone, train_set, transform, device)
    test = extract_features(backbone, test_set, transform, device)
    stage = backbone.stage_names[-1]
    x_train, x_test = train["features"][stage], test["features"][stage]
    manifest = {row["path"]: row for row in load_manifest(world)}
    rows = [manifest[relative_path(test_set, int(i))] for i in test["index"]]
    results = {
        "action": linear_probe(x_train, train["labels"], x_test, test["labels"]),
        "object": half_split_probe(x_test, torch.tensor([r["object_id"] for r in rows])),
        "scene": half_split_probe(x_test, torch.tensor([r["scene_id"] for r in rows])),
    }
    results.update(retrieval_recall(x_train, train["labels"], x_test, test["labels"], ks=(1, 5, 10)))
    full_frame = lambda clips: transform(clips, crop_fraction=1.0)  # noqa: E731 - keeps masks aligned
    sampler = UniformClipSampler(cfg.model.clip_frames, cfg.model.clip_stride, 1)
    test_set.clip_sampler = sampler
    results["fg_ratio"] = foreground_ratio(backbone, test_set, Masks(world), full_frame, device, sampler)
    return results
