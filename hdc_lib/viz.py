"""Figures: the ablation bars, training curves, HDC's level weights, activation-map panels.

Each function returns a matplotlib Figure (a notebook shows it as it is) and, given `path`, saves a
small PNG there. Figures are built without pyplot, so nothing depends on the display backend.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from hdc_lib.dclr import activation_map

DPI = 60


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return fig


def read_metrics(run_dir: str | Path, kind: str) -> list[dict]:
    """The `kind` ("step" or "epoch") records of a run's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def ablation_bars(table: dict[str, dict[str, tuple[float, float]]], metrics: tuple[str, ...],
                  chance: dict[str, float] | None = None, path=None) -> Figure:
    """One panel per metric: a bar (mean) with an error bar (std over seeds) per variant."""
    variants = list(table)
    fig = Figure(figsize=(3.2 * len(metrics), 3.4))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        means = [table[v][metric][0] for v in variants]
        stds = [table[v][metric][1] for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, color="tab:blue", alpha=0.8, capsize=3)
        if chance and metric in chance:
            ax.axhline(chance[metric], color="grey", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(variants)), variants, rotation=60, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def training_curves(runs: dict[str, str | Path], path=None) -> Figure:
    """Per-epoch total loss and kNN accuracy of each run."""
    fig = Figure(figsize=(9, 3.2))
    loss_ax, knn_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, run in runs.items():
        epochs = read_metrics(run, "epoch")
        x = [r["epoch"] + 1 for r in epochs]
        loss_ax.plot(x, [r["loss/total"] for r in epochs], label=name)
        if any("knn_acc" in r for r in epochs):
            knn_ax.plot([r["epoch"] + 1 for r in epochs if "knn_acc" in r],
                        [r["knn_acc"] for r in epochs if "knn_acc" in r], label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    knn_ax.set(xlabel="epoch", ylabel="kNN action accuracy", title="kNN monitor (test split)")
    knn_ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def level_weights(run: str | Path, path=None) -> Figure:
    """HDC's per-term loss weights and measured invariances over training."""
    steps = read_metrics(run, "step")
    terms = sorted(k.split("/", 1)[1] for k in steps[0] if k.startswith("weight/"))
    fig = Figure(figsize=(9, 3.2))
    weight_ax, inv_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = [r["global_step"] for r in steps]
    for term in terms:
        weight_ax.plot(x, [r[f"weight/{term}"] for r in steps], label=term)
        inv_ax.plot(x, [r[f"invariance/{term}"] for r in steps], label=term)
    weight_ax.set(xlabel="step", ylabel="w_j", title="level weights w_j = n iota_j / sum iota")
    inv_ax.set(xlabel="step", ylabel="iota_j", title="invariance (1 + cos+) / 2, EMA")
    inv_ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


@torch.no_grad()
def activation_panels(models: dict[str, torch.nn.Module], clips: torch.Tensor, device="cpu",
                      frame: int | None = None, path=None) -> Figure:
    """Rows = videos, columns = the frame then each model's last-stage activation map over it.

    clips: uint8 (N, T, H, W, C). Each model's own centre transform with the whole frame
    (crop_fraction=1) is used, so the map lies exactly over the picture.
    """
    n, t = clips.shape[:2]
    frame = t // 2 if frame is None else frame
    fig = Figure(figsize=(1.1 * (len(models) + 1), 1.2 * n))
    grid = fig.subplots(n, len(models) + 1, squeeze=False)
    for row in range(n):
        grid[row, 0].imshow(clips[row, frame].numpy())
    for col, (name, model) in enumerate(models.items(), start=1):
        backbone = model.backbone.eval()
        x = model.augment.center(clips.to(device), crop_fraction=1.0)
        last = backbone.stage_names[-1]
        amap = activation_map(backbone.features(x, stages=(last,))[last]).float()  # (N, T', h, w)
        # Upsample over time and space to the clip's frames, then take the shown frame.
        amap = F.interpolate(amap[:, None], size=(t, *clips.shape[2:4]), mode="trilinear",
                             align_corners=False)[:, 0, frame].cpu()
        for row in range(n):
            ax = grid[row, col]
            ax.imshow(clips[row, frame].numpy())
            heat = amap[row] / amap[row].max().clamp_min(1e-12)
            ax.imshow(heat.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if row == 0:
                ax.set_title(name, fontsize=8)
    grid[0, 0].set_title("frame", fontsize=8)
    for ax in grid.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
