"""E1 of results/hdc_readings.md: do HDC's two subtasks pull the shared backbone in opposite ways?

For every checkpoint of a trained two-subtask HDC run (a folder written by world_ladder.py or
`hdc pretrain`), the cosine between the spatial and the temporal contrast's gradients on the
backbone (`hdc_lib.hdc.subtask_gradient_cosine`), averaged over a few training batches of the run's
own world (drawn with a fixed seed, the same batches for every checkpoint). No training: a clearly
negative cosine means that a step of one subtask undoes the other's.

    python results/scripts/gradient_conflict.py runs/ladder/E0 runs/ladder/E2 --batches 4

Appends one JSON line per run to results/hdc_gradient_conflict.jsonl (or `--log`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from hdc_lib.checkpoint import list_checkpoints, load_checkpoint
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.experiment import build_dataset, build_method, saved_run_config
from hdc_lib.hdc import subtask_gradient_cosine

REPO = Path(__file__).resolve().parents[2]


def fixed_batches(cfg, method, count: int, seed: int = 0) -> list[torch.Tensor]:
    """`count` batches of windows (B, K, T, H, W, C) from the run's train split, drawn with `seed`."""
    dataset = build_dataset(cfg, True, None)
    dataset.clip_sampler = RandomClipSampler(**method.clip_request())
    rng = np.random.default_rng(seed)
    batch = cfg.train.batch_size
    order = rng.permutation(len(dataset))[:count * batch]
    return [torch.stack([torch.as_tensor(dataset[int(i)]["video"]) for i in order[k * batch:(k + 1) * batch]])
            for k in range(count)]


def conflict(run: Path, batches: int) -> dict:
    checkpoints = sorted(list_checkpoints(run))  # oldest first
    first = load_checkpoint(checkpoints[0])
    cfg = saved_run_config(first["config"])
    method = build_method(cfg, num_classes=8)
    windows = fixed_batches(cfg, method, batches)
    curve = []
    for path in checkpoints:
        state = load_checkpoint(path)
        method.load_state_dict(state["model"])
        method.train()
        per_batch = [subtask_gradient_cosine(method, method.make_views(w, torch.Generator().manual_seed(k)))
                     for k, w in enumerate(windows)]
        curve.append({"epoch": int(state["epoch"]), "step": int(state["step"]),
                      **{level: float(np.mean([b[level] for b in per_batch])) for level in per_batch[0]},
                      "per_batch": per_batch})
        print(run.name, path.name, {k: round(v, 3) for k, v in curve[-1].items() if isinstance(v, float)}, flush=True)
    return {"run": run.name, "sc_pair": cfg.model.sc_pair, "sc_detach": cfg.model.sc_detach, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log", default="results/hdc_gradient_conflict.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    for run in args.runs:
        started = time.perf_counter()
        record = {**conflict(run, args.batches), "batches": args.batches, "commit": commit,
                  "seconds": round(time.perf_counter() - started, 1)}
        with open(REPO / args.log, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
