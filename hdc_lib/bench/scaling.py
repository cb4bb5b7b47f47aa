"""Row 6, scaling: the HDC step's time against batch size, clip length and tapped levels (a figure)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from hdc_lib.bench.steps import make_step, random_windows, toy_method
from hdc_lib.bench.timing import interleaved_medians


SCALING_AXES = {"batch": (8, 16, 32, 64), "clip_frames": (4, 8, 16), "levels": (1, 2, 3)}


QUICK_AXES = {"batch": (8, 32), "clip_frames": (4, 8), "levels": (1, 3)}


LEVEL_SETS = {1: ["layer4"], 2: ["layer3", "layer4"], 3: ["layer2", "layer3", "layer4"]}


def bench_scaling(axes: dict = SCALING_AXES, repeats: int = 3, base_batch: int = 32) -> dict[str, list[tuple]]:
    """HDC step seconds against batch size, frames per view and number of tapped levels, one axis at
    a time (others at the toy preset's values, batch `base_batch`)."""
    results = {}
    for axis, values in axes.items():
        points = []
        for value in values:
            batch = value if axis == "batch" else base_batch
            overrides = ()
            if axis == "clip_frames":
                overrides = (f"model.clip_frames={value}",)
            elif axis == "levels":
                overrides = (f"model.levels={json.dumps(LEVEL_SETS[value])}",)
            _, method = toy_method("hdc", overrides)
            views = method.make_views(random_windows(method, batch), generator=torch.Generator().manual_seed(0))
            optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
            seconds = interleaved_medians({"step": make_step(method, optimizer, views)}, repeats)
            points.append((value, seconds["step"]))
        results[axis] = points
    return results


def scaling_figure(results: dict[str, list[tuple]], path: str | Path | None = None):
    """One small panel per axis: step milliseconds against the axis value."""
    from matplotlib.figure import Figure

    from hdc_lib import viz

    labels = {"batch": "batch size (videos)", "clip_frames": "frames per view", "levels": "tapped levels"}
    fig = Figure(figsize=(3 * len(results), 2.6))
    for i, (axis, points) in enumerate(results.items()):
        ax = fig.add_subplot(1, len(results), i + 1)
        x, seconds = zip(*points)
        ax.plot(x, [1000 * s for s in seconds], marker="o")
        ax.set(xlabel=labels[axis], ylabel="HDC step (ms)" if i == 0 else None, xticks=list(x))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return viz._save(fig, path)
