"""Figures: the ablation bars, training curves, HDC's level weights, activation-map panels.

Each figure function returns a matplotlib Figure (a notebook shows it as it is) and, given `path`,
saves a small PNG there. Figures are built without pyplot, so nothing depends on the display
backend. The activation-map helpers (`upsample_map`, `frame_maps`, `overlay`) return arrays, so a
notebook can draw them its own way (e.g. in a widget).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from hdc_lib.dclr import activation_map

DPI = 100  # figures are read on screens and in the README: 100 dpi or more


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return fig


def read_metrics(run_dir: str | Path, kind: str) -> list[dict]:
    """The `kind` ("step" or "epoch") records of a run's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def ablation_bars(table: dict[str, dict[str, tuple[float, float, float]]], metrics: tuple[str, ...],
                  chance: dict[str, float] | None = None, path=None) -> Figure:
    """One panel per metric: a bar (mean over seeds) with its 95% interval (low, high) per row."""
    rows = list(table)
    fig = Figure(figsize=(3.0 * len(metrics), 3.6))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        means = np.array([table[r][metric][0] for r in rows])
        bounds = np.array([table[r][metric][1:] for r in rows])
        error = np.nan_to_num(np.abs(bounds.T - means))  # one seed: no interval, no error bar
        ax.bar(range(len(rows)), means, yerr=error, color="tab:blue", alpha=0.8, capsize=3)
        if chance and metric in chance:
            ax.axhline(chance[metric], color="grey", linestyle="--", linewidth=1)
            ax.annotate("chance", (1.0, chance[metric]), xycoords=("axes fraction", "data"),
                        xytext=(2, 0), textcoords="offset points", fontsize=7, color="grey", va="center")
        ax.set_xticks(range(len(rows)), rows, rotation=60, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def probe_curves(curves: dict[str, list[dict]], metrics: tuple[str, ...],
                 chance: dict[str, float] | None = None, path=None) -> Figure:
    """Probe accuracy against optimiser step, one panel per probe, one line per row: what each
    method picks up first (the scene?) and when motion (action, direction) follows."""
    fig = Figure(figsize=(3.6 * len(metrics), 3.4))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for row, points in curves.items():
            ax.plot([p["step"] for p in points], [p[metric] for p in points], marker="o", markersize=3, label=row)
        if chance and metric in chance:
            ax.axhline(chance[metric], color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="optimiser step", title=metric, ylim=(0, 1))
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def training_curves(runs: dict[str, str | Path], path=None) -> Figure:
    """Per-epoch total loss of each run, and its kNN accuracy when the run logged one."""
    records = {name: read_metrics(run, "epoch") for name, run in runs.items()}
    with_knn = any("knn_acc" in r for epochs in records.values() for r in epochs)
    fig = Figure(figsize=(9 if with_knn else 5, 3.4))
    loss_ax = fig.add_subplot(1, 2 if with_knn else 1, 1)
    for name, epochs in records.items():
        loss_ax.plot([r["epoch"] + 1 for r in epochs], [r["loss/total"] for r in epochs], label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    loss_ax.legend(fontsize=7)
    if with_knn:
        knn_ax = fig.add_subplot(1, 2, 2)
        for name, epochs in records.items():
            knn_ax.plot([r["epoch"] + 1 for r in epochs if "knn_acc" in r],
                        [r["knn_acc"] for r in epochs if "knn_acc" in r], label=name)
        knn_ax.set(xlabel="epoch", ylabel="kNN action accuracy", title="kNN monitor (test split)")
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


def upsample_map(amap: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Activation maps (N, T', h, w) -> (N, T, H, W): trilinear interpolation to `size` = (T, H, W).

    With the clip's frame count and pixel size as `size`, each map lies over the frames it was
    computed from (when the model saw the whole frame, crop_fraction=1). Interpolation is a convex
    combination of neighbouring cells, so non-negative maps stay non-negative and a constant map
    stays constant.
    """
    if amap.ndim != 4:
        raise ValueError(f"viz.py: activation maps must be (N, T', h, w), got {tuple(amap.shape)}")
    return F.interpolate(amap[:, None].float(), size=tuple(size), mode="trilinear",
                         align_corners=False)[:, 0]


@torch.no_grad()
def frame_maps(backbone, clips: torch.Tensor, transform, stages=None, device="cpu") -> dict[str, torch.Tensor]:
    """Activation maps A(p) = sum_c f_c(p) of every requested stage, upsampled to the clips' frames.

    clips: uint8 (N, T, H, W, C). `transform` turns them into the model's input and must keep the
    whole frame (e.g. `lambda c: augment.center(c, crop_fraction=1.0)`), so that map and frame are
    aligned. Returns {stage: float (N, T, H, W)} on the CPU, raw (not rescaled; non-negative for the
    post-ReLU stage outputs), in the backbone's eval mode.
    """
    was_training = backbone.training
    backbone.eval()
    stages = tuple(stages) if stages is not None else tuple(backbone.stage_names)
    n, t, h, w = clips.shape[:4]
    maps = backbone.features(transform(clips.to(device)), stages=stages)
    backbone.train(was_training)
    return {s: upsample_map(activation_map(maps[s]), (t, h, w)).cpu() for s in stages}


def overlay(frame, heat, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """A heat map drawn over a frame: float32 (H, W, 3) in [0, 1] = (1 - alpha) frame + alpha cmap(heat).

    frame: (H, W, 3) uint8, or float in [0, 1]. heat: (H, W), non-negative, any scale: it is
    divided by its maximum, so the hottest pixel gets the colour map's top colour (an all-zero
    map gets its bottom colour everywhere).
    """
    import matplotlib

    frame = np.asarray(frame.numpy() if torch.is_tensor(frame) else frame)
    heat = np.asarray(heat.numpy() if torch.is_tensor(heat) else heat, dtype=np.float64)
    if frame.ndim != 3 or frame.shape[2] != 3 or heat.shape != frame.shape[:2]:
        raise ValueError(f"viz.py: overlay needs a (H, W, 3) frame and an (H, W) map of the same size, "
                         f"got {frame.shape} and {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"viz.py: alpha must be in [0, 1], got {alpha}")
    image = frame.astype(np.float64) / 255.0 if frame.dtype == np.uint8 else frame.astype(np.float64)
    peak = heat.max()
    scaled = heat / peak if peak > 0 else np.zeros_like(heat)
    colours = matplotlib.colormaps[cmap](scaled)[..., :3]
    return ((1.0 - alpha) * image + alpha * colours).clip(0.0, 1.0).astype(np.float32)


def overlay_grid(frames, maps: dict[str, dict[str, list]], masks=None, titles=None, alpha: float = 0.5,
                 cell: float = 1.0, path=None) -> Figure:
    """Activation maps of several models and levels over the same frames, one block per video.

    frames: V frames (H, W, 3); maps: {row (e.g. model): {column (e.g. level): V maps (H, W)}};
    masks: optional V boolean object masks (H, W), drawn as a white outline on every overlay;
    titles: optional V block titles. In each block the first column shows the frame and, below
    it, the mask; then one column per map column, one row per map row.
    """
    rows = list(maps)
    columns = list(maps[rows[0]])
    n_videos = len(frames)
    fig = Figure(figsize=(cell * (len(columns) + 1) * n_videos, cell * len(rows) + 0.35),
                 layout="constrained")
    blocks = fig.subfigures(1, n_videos, squeeze=False)[0]
    for v, block in enumerate(blocks):
        grid = block.subplots(len(rows), len(columns) + 1, squeeze=False)
        for ax in grid.ravel():
            ax.set_axis_off()
        grid[0, 0].imshow(np.asarray(frames[v]))
        grid[0, 0].set_title("frame", fontsize=7)
        if masks is not None and len(rows) > 1:
            grid[1, 0].imshow(np.asarray(masks[v]), cmap="gray", vmin=0, vmax=1)
            grid[1, 0].set_title("object mask", fontsize=7)
        for r, row in enumerate(rows):
            for c, column in enumerate(columns, start=1):
                ax = grid[r, c]
                ax.imshow(overlay(frames[v], maps[row][column][v], alpha=alpha))
                if masks is not None:
                    ax.contour(np.asarray(masks[v], dtype=float), levels=[0.5], colors="white",
                               linewidths=0.6)
                if r == 0:
                    ax.set_title(column, fontsize=7)
            grid[r, 1].text(-0.06, 0.5, row, transform=grid[r, 1].transAxes, rotation=90,
                            ha="right", va="center", fontsize=7)
        if titles is not None:
            block.suptitle(titles[v], fontsize=8)
    return _save(fig, path)


@torch.no_grad()
def activation_panels(models: dict[str, torch.nn.Module], clips: torch.Tensor, device="cpu",
                      frame: int | None = None, path=None) -> Figure:
    """Rows = videos, columns = the frame then each model's last-stage activation map over it.

    clips: uint8 (N, T, H, W, C). Each model's own centre transform with the whole frame
    (crop_fraction=1) is used, so the map lies exactly over the picture; each shown map is scaled
    to its own maximum on that frame.
    """
    n, t = clips.shape[:2]
    frame = t // 2 if frame is None else frame
    fig = Figure(figsize=(1.1 * (len(models) + 1), 1.2 * n))
    grid = fig.subplots(n, len(models) + 1, squeeze=False)
    for row in range(n):
        grid[row, 0].imshow(clips[row, frame].numpy())
    for col, (name, model) in enumerate(models.items(), start=1):
        backbone = model.backbone
        last = backbone.stage_names[-1]
        transform = lambda c, m=model: m.augment.center(c, crop_fraction=1.0)  # noqa: E731
        amap = frame_maps(backbone, clips, transform, stages=(last,), device=device)[last][:, frame]
        for row in range(n):
            grid[row, col].imshow(overlay(clips[row, frame], amap[row]))
            if row == 0:
                grid[row, col].set_title(name, fontsize=8)
    grid[0, 0].set_title("frame", fontsize=8)
    for ax in grid.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)
