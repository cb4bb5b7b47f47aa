"""One rung of the toy-world ladder: pretrain one config on one world for a fixed number of
optimiser steps, then read out what the frozen backbone knows, at every stage.

Exploration tool behind results/toyworld_log.md (not part of the library): it trains with the
library's own loop (`hdc_lib.train.train`) and probes with scikit-learn logistic regression (L2
strength chosen by 5-fold cross-validation inside each fit set, standardised features), so a rung
is comparable with the next whatever the library's probes become.

The probes never see the world's test split: they score the scene-unbiased split of a validation
world, the same world rendered with another seed (`--val-seed`): other videos from the same
distribution. The biased-fit action probe is fitted on the training world's train split.

    python results/scripts/world_ladder.py --name tc_rev_w0 --config tc_only \
        --world '{}' --steps 900 model.extra_hard_negatives=[reversed] 'model.window_offset=[2,8]'

`--geometry '{"SCALE_SMALL": [0.2, 0.25]}'` overrides the world's geometry constants
(hdc_lib.data.toyworld's module-level OBJECT_SIDE, SPEED, RADIUS, OMEGA, SCALE_SMALL, SCALE_LARGE,
...) for this process: a candidate world change measured before it becomes a world argument. The
geometry joins the world folder's hash, so such a world never shares a folder with a library one.

Appends one JSON line to results/toyworld_ladder.jsonl (or `--log`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hdc_lib.data import toyworld
from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.data.toyworld import ACTIONS, REVERSE, load_manifest
from hdc_lib.experiment import build_dataset, build_method, load_config
from hdc_lib.train import train

REPO = Path(__file__).resolve().parents[2]


def fitted_probe(x_fit, y_fit):
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 2, 6), cv=5, max_iter=2000))
    return model.fit(x_fit, y_fit)


def probe(x_fit, y_fit, x_score, y_score) -> float:
    return float((fitted_probe(x_fit, y_fit).predict(x_score) == y_score).mean())


def cross_fitted(x, y, seed=0) -> tuple[float, np.ndarray]:
    """Two-fold stratified cross-fitting: fit on one half, score the other, both ways. Returns the
    two halves' accuracies averaged, and every item's prediction by the probe that did not see it."""
    predicted, accuracies = np.empty_like(y), []
    for a, b in StratifiedKFold(2, shuffle=True, random_state=seed).split(x, y):
        predicted[b] = fitted_probe(x[a], y[a]).predict(x[b])
        accuracies.append((predicted[b] == y[b]).mean())
    return float(np.mean(accuracies)), predicted


def cross_fit(x, y, seed=0) -> float:
    return cross_fitted(x, y, seed)[0]


def readouts(train_x, train_y, test_x, test_y, scene) -> dict:
    pairs = sorted({tuple(sorted((ACTIONS.index(a), ACTIONS.index(REVERSE[a])))) for a in ACTIONS})
    direction = [cross_fit(test_x[np.isin(test_y, p)], test_y[np.isin(test_y, p)]) for p in pairs]
    action_unbiased, predicted = cross_fitted(test_x, test_y)
    # which motions the features miss: the action_unbiased cross-fit's recall of each action
    per_class = {ACTIONS[c]: float((predicted[test_y == c] == c).mean()) for c in np.unique(test_y)}
    return {"action_biased": probe(train_x, train_y, test_x, test_y), "action_unbiased": action_unbiased,
            "action_unbiased_per_class": per_class, "direction": float(np.mean(direction)),
            "scene": cross_fit(test_x, scene)}


@torch.no_grad()
def features(backbone, dataset, transform, stages):
    backbone.eval()
    out = {s: [] for s in stages}
    labels, index = [], []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=32):
        video = batch["video"]
        b, k = video.shape[:2]
        maps = backbone.features(transform(video.flatten(0, 1)), stages=stages)
        for s in stages:
            out[s].append(maps[s].float().mean(dim=(2, 3, 4)).view(b, k, -1).mean(1))
        labels.append(batch["label"])
        index.append(batch["index"])
    return {s: torch.cat(v).numpy() for s, v in out.items()}, torch.cat(labels).numpy(), torch.cat(index).numpy()


def world_dir_of(world: dict, geometry: dict) -> Path:
    key = {**world, "geometry": geometry} if geometry else world
    return REPO / "data" / "ladder" / hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", required=True, help="a configs/toy/*.yaml name")
    parser.add_argument("--world", default="{}", help="toy-world arguments (JSON)")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--val-seed", type=int, default=1000, help="seed of the validation world")
    parser.add_argument("--geometry", default="{}", help="toy-world geometry constants to override (JSON)")
    parser.add_argument("--log", default="results/toyworld_ladder.jsonl", help="the JSON-lines file the record joins")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    world, geometry = json.loads(args.world), json.loads(args.geometry)
    for name, value in geometry.items():
        if not hasattr(toyworld, name):
            parser.error(f"--geometry: hdc_lib.data.toyworld has no constant {name}")
        setattr(toyworld, name, tuple(value) if isinstance(value, list) else value)
    world_dir = world_dir_of(world, geometry)
    base = [f"data.root={world_dir}", f"data.toyworld={json.dumps(world)}", f"train.seed={args.seed}",
            "train.knn_every=0", f"train.out_dir={REPO / 'runs' / 'ladder' / args.name}"]
    cfg = load_config(REPO / "configs" / "toy" / f"{args.config}.yaml", base + args.overrides)
    n_train = len(build_dataset(cfg, True, None))
    epochs = math.ceil(args.steps / (n_train // cfg.train.batch_size))
    cfg = load_config(REPO / "configs" / "toy" / f"{args.config}.yaml", base + [f"train.epochs={epochs}"] + args.overrides)
    started = time.perf_counter()
    # An interrupted rung continues from its last checkpoint (its seconds then count this call only).
    resume = any(Path(cfg.train.out_dir).glob("ckpt_*.pt"))
    method = train(cfg, resume=resume, progress=False)["method"]
    seconds = time.perf_counter() - started
    backbone = method.backbone
    stages = tuple(backbone.stage_names[1:])
    sampler = UniformClipSampler(cfg.model.clip_frames, cfg.model.clip_stride, 4)
    val_world = {**world, "seed": args.val_seed}
    val_cfg = load_config(REPO / "configs" / "toy" / f"{args.config}.yaml",
                          base + args.overrides + [f"data.root={world_dir_of(val_world, geometry)}",
                                                   f"data.toyworld={json.dumps(val_world)}"])
    splits = [build_dataset(cfg, True, sampler), build_dataset(val_cfg, False, sampler)]
    transform = method.augment.center
    (trx, try_, _), (tex, tey, tei) = [features(backbone, s, transform, stages) for s in splits]
    manifest = {r["path"]: r for r in load_manifest(world_dir_of(val_world, geometry))}
    paths = [splits[1].samples[i][0] for i in tei]
    scene = np.array([manifest[f"{Path(p).parent.name}/{Path(p).name}"]["scene_id"] for p in paths])
    result = {s: readouts(trx[s], try_, tex[s], tey, scene) for s in stages}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "hdc_lib"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    record = {"name": args.name, "config": args.config, "world": world, "geometry": geometry, "steps": args.steps, "epochs": epochs,
              "seed": args.seed, "overrides": args.overrides, "train_seconds": round(seconds, 1),
              "threads": torch.get_num_threads(), "commit": commit + ("+changes" if dirty else ""), "probes": result}
    with open(REPO / args.log, "a") as f:
        f.write(json.dumps(record) + "\n")
    last = result[stages[-1]]
    print(args.name, {k: v if isinstance(v, dict) else round(v, 3) for k, v in last.items()}, f"{seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main()
