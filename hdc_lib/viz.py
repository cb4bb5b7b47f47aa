"""Figures: the ablation bars, probe curves, training curves, HDC's level weights, activation-map
panels, and the two methods drawn as schematics.

Each figure function returns a matplotlib Figure (a notebook shows it as it is) and, given `path`,
saves a small PNG there. Figures are built without pyplot, so nothing depends on the display
backend. The activation-map helpers (`full_frame_view`, `upsample_map`, `frame_maps`, `level_maps`,
`overlay`) return views and arrays, so a notebook can draw them its own way (e.g. in a widget).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle

from hdc_lib.dclr import activation_map
from hdc_lib.probes import foreground_ratios
from hdc_lib.train import read_metrics  # a run's records; the notebooks import it from here

DPI = 100  # figures are read on screens and in the README: 100 dpi or more


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return fig


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


TAB10 = [to_hex(c) for c in colormaps["tab10"].colors]


def row_styles(rows) -> dict[str, dict]:
    """One (colour, line style) per row, distinct for up to 30 rows: the ten tab10 colours, solid,
    then dashed, then dotted, so a figure of every ablation row never draws two rows alike."""
    # the colours themselves, not "C<k>": those resolve against whatever colour cycle is active
    # when the figure is drawn, so a notebook with another style would redraw them differently
    return {row: {"color": TAB10[k % 10], "linestyle": ("-", "--", ":")[k // 10 % 3]} for k, row in enumerate(rows)}


def probe_curves(curves: dict[str, list[dict]], metrics: tuple[str, ...],
                 chance: dict[str, float] | None = None, path=None) -> Figure:
    """Probe accuracy against optimiser step, one panel per probe, one line per row: what each
    method picks up first (the scene?) and when motion (action, direction) follows."""
    fig = Figure(figsize=(3.6 * len(metrics), 3.4))
    styles = row_styles(curves)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for row, points in curves.items():
            ax.plot([p["step"] for p in points], [p[metric] for p in points], marker="o", markersize=3,
                    label=row, **styles[row])
        if chance and metric in chance:
            ax.axhline(chance[metric], color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="optimiser step", title=metric, ylim=(0, 1))
    # one legend beside the last panel, where it hides no curve
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return _save(fig, path)


def training_curves(runs: dict[str, str | Path], path=None) -> Figure:
    """Per-epoch total loss of each run, and its kNN accuracy when the run logged one."""
    records = {name: read_metrics(run, "epoch") for name, run in runs.items()}
    with_knn = any("knn_acc" in r for epochs in records.values() for r in epochs)
    styles = row_styles(records)
    fig = Figure(figsize=(9 if with_knn else 5, 3.4))
    loss_ax = fig.add_subplot(1, 2 if with_knn else 1, 1)
    for name, epochs in records.items():
        loss_ax.plot([r["epoch"] for r in epochs], [r["loss/total"] for r in epochs], label=name, **styles[name])
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    if with_knn:
        knn_ax = fig.add_subplot(1, 2, 2)
        for name, epochs in records.items():
            knn_ax.plot([r["epoch"] for r in epochs if "knn_acc" in r],
                        [r["knn_acc"] for r in epochs if "knn_acc" in r], label=name, **styles[name])
        knn_ax.set(xlabel="epoch", ylabel="kNN action accuracy", title="kNN monitor (test split)")
    fig.axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return _save(fig, path)


# How each HDC weighting turns the invariances iota into loss weights (hdc_lib/hdc.py).
WEIGHTING_TITLES = {"invariance": "w_j = n iota_j / sum iota (W0)",
                    "invariance_levels": "w_sl = L softmax_l(iota_sl / t) (W1)",
                    "uniform": "w_j = 1 (uniform)", "learned": "w_j = exp(-s_j), learned"}


def level_weights(run: str | Path, path=None) -> Figure:
    """HDC's per-term loss weights and measured invariances over training, titled with the
    weighting the run's config names (its config.yaml, or a record's record.json)."""
    run = Path(run)
    config = (yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists()
              else json.loads((run / "record.json").read_text())["config"])
    weighting = config["model"]["weighting"]
    steps = read_metrics(run, "step")
    terms = sorted(k.split("/", 1)[1] for k in steps[0] if k.startswith("weight/"))
    fig = Figure(figsize=(9, 3.2))
    weight_ax, inv_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = [r["global_step"] for r in steps]
    for term in terms:
        weight_ax.plot(x, [r[f"weight/{term}"] for r in steps], label=term)
        inv_ax.plot(x, [r[f"invariance/{term}"] for r in steps], label=term)
    weight_ax.set(xlabel="step", ylabel="w_j", title=f"loss weights {WEIGHTING_TITLES[weighting]}")
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


def full_frame_view(model):
    """A method's deterministic centre view of the whole frame (`augment.center`, crop_fraction=1):
    activation maps computed on it lie over the clip's frames and the object's masks."""
    return lambda clips: model.augment.center(clips, crop_fraction=1.0)


@torch.no_grad()
def frame_maps(backbone, clips: torch.Tensor, transform, stages=None, device="cpu") -> dict[str, torch.Tensor]:
    """Activation maps A(p) = sum_c f_c(p) of every requested stage, upsampled to the clips' frames.

    clips: uint8 (N, T, H, W, C). `transform` turns them into the model's input and must keep the
    whole frame (e.g. `full_frame_view(model)`), so that map and frame are aligned. Returns {stage:
    float (N, T, H, W)} on the CPU, raw (not rescaled; non-negative for the post-ReLU stage
    outputs), in the backbone's eval mode.
    """
    was_training = backbone.training
    backbone.eval()
    stages = tuple(stages) if stages is not None else tuple(backbone.stage_names)
    n, t, h, w = clips.shape[:4]
    maps = backbone.features(transform(clips.to(device)), stages=stages)
    backbone.train(was_training)
    return {s: upsample_map(activation_map(maps[s]), (t, h, w)).cpu() for s in stages}


def overlay(frame, heat, alpha: float = 0.5, cmap: str = "jet", vmax: float | None = None) -> np.ndarray:
    """A heat map drawn over a frame: float32 (H, W, 3) in [0, 1] = (1 - alpha) frame + alpha cmap(heat / vmax).

    frame: (H, W, 3) uint8, or float in [0, 1]. heat: (H, W), non-negative, any scale. vmax: the
    value that gets the colour map's top colour (larger values are clipped to it); by default the
    map's own maximum, so every map fills the colour range (an all-zero map gets its bottom colour
    everywhere). Give several maps one vmax to compare them on one scale.
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
    peak = heat.max() if vmax is None else vmax
    scaled = (heat / peak).clip(0.0, 1.0) if peak > 0 else np.zeros_like(heat)
    colours = matplotlib.colormaps[cmap](scaled)[..., :3]
    return ((1.0 - alpha) * image + alpha * colours).clip(0.0, 1.0).astype(np.float32)


def heat_rows(rows: dict[str, list[dict]], suptitle: str | None = None, alpha: float = 0.55,
              cmap: str = "magma", cell: float = 1.0, label_colours: dict | None = None,
              bar_label: str | None = None, path=None) -> Figure:
    """Heat maps over frames on one colour scale per row, so the maps of a row compare directly.

    rows: {row label: panels}, the same number of panels in every row. A panel is a dict with
    "frame" (H, W, 3) and optional "heat" (H, W) >= 0, drawn over the frame by `overlay` with the
    row's scale (0 .. the largest heat value in the row; its colour bar on the right), a panel
    without "heat" showing the frame alone; "outlines": (mask (H, W), colour, line style) triples,
    drawn as contours; "title" above the panel; "note", boxed in its lower-left corner.
    label_colours: optional {row label: colour} of the row labels.
    """
    import matplotlib

    labels = list(rows)
    width = len(rows[labels[0]])
    if any(len(panels) != width for panels in rows.values()):
        raise ValueError(f"viz.py: heat_rows needs the same number of panels in every row, got "
                         f"{ {label: len(panels) for label, panels in rows.items()} }")
    fig = Figure(figsize=(cell * width + 1.0, cell * len(labels) + 0.5), layout="constrained")
    grid = fig.subplots(len(labels), width, squeeze=False)
    for r, label in enumerate(labels):
        heats = [np.asarray(p["heat"], dtype=np.float64) for p in rows[label] if p.get("heat") is not None]
        vmax = max((float(h.max()) for h in heats), default=0.0)
        for ax, panel in zip(grid[r], rows[label]):
            ax.set_axis_off()
            frame = np.asarray(panel["frame"])
            heat = panel.get("heat")
            ax.imshow(frame if heat is None else overlay(frame, heat, alpha, cmap, vmax=vmax))
            for mask, colour, style in panel.get("outlines", ()):
                ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors=colour, linewidths=0.7,
                           linestyles=style)
            if "title" in panel:
                ax.set_title(panel["title"], fontsize=8)
            if "note" in panel:
                ax.text(0.03, 0.04, panel["note"], transform=ax.transAxes, fontsize=7.5,
                        bbox=dict(facecolor="white", alpha=0.8, pad=1, lw=0))
        grid[r, 0].text(-0.08, 0.5, label, transform=grid[r, 0].transAxes, rotation=90, ha="right",
                        va="center", fontsize=8, color=(label_colours or {}).get(label, "black"))
        if heats:
            scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0.0, vmax), cmap)
            fig.colorbar(scale, ax=list(grid[r]), shrink=0.9, pad=0.01, aspect=10, label=bar_label)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def level_maps(model, clips: torch.Tensor, clip_masks: torch.Tensor, levels, device="cpu") -> dict[str, dict]:
    """Each level's map of each clip, from one pass of the model's backbone (eval mode, restored
    after) over its full-frame view: {level: {"normalised": Â (N, T, H, W), "fg_ratio": (N,)}}.

    Â is the activation map A upsampled to the clip's frames (`upsample_map`) and divided by its
    mean over the clip, so 1 is an average position and maps of different levels share one scale;
    "fg_ratio" is each clip's `probes.foreground_ratios` at that level, against clip_masks: bool
    (N, T, H, W), the object in the clips' frames. clips: uint8 (N, T, H, W, C).
    """
    backbone = model.backbone
    was_training = backbone.training
    backbone.eval()
    maps = backbone.features(full_frame_view(model)(clips.to(device)), stages=tuple(levels))
    backbone.train(was_training)
    out = {}
    for level in levels:
        amap = activation_map(maps[level]).float().cpu()
        up = upsample_map(amap, tuple(clips.shape[1:4]))
        out[level] = {"normalised": up / up.mean(dim=(1, 2, 3), keepdim=True),
                      "fg_ratio": foreground_ratios(amap, clip_masks)}
    return out


def map_grid(models: dict[str, torch.nn.Module], clips: torch.Tensor, clip_masks: torch.Tensor, titles: list[str],
             frame: int, levels, suptitle: str | None = None, cmap: str = "magma", label_colours: dict | None = None,
             device="cpu", path=None) -> Figure:
    """One row per model; per clip, frame `frame`, then each level's normalised map Â over it
    (`level_maps`), with the clip's foreground ratio at that level in the panel's corner and the
    object's outline in white. One colour scale per row (`heat_rows`), so a model's levels compare
    directly. titles: one per clip, above its frame in the first row."""
    rows = {}
    for k, (name, model) in enumerate(models.items()):
        maps = level_maps(model, clips, clip_masks, levels, device)
        rows[name] = []
        for v in range(len(clips)):
            rows[name].append({"frame": clips[v, frame], **({"title": titles[v]} if k == 0 else {})})
            rows[name] += [{"frame": clips[v, frame], "heat": maps[level]["normalised"][v, frame],
                            "note": f"fg {maps[level]['fg_ratio'][v]:.2f}",
                            "outlines": [(clip_masks[v, frame], "white", "-")], **({"title": level} if k == 0 else {})}
                           for level in levels]
    return heat_rows(rows, suptitle, alpha=0.55, cmap=cmap, cell=0.95, label_colours=label_colours, bar_label="Â",
                     path=path)


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
        amap = frame_maps(backbone, clips, full_frame_view(model), stages=(last,), device=device)[last][:, frame]
        for row in range(n):
            grid[row, col].imshow(overlay(clips[row, frame], amap[row]))
            if row == 0:
                grid[row, col].set_title(name, fontsize=8)
    grid[0, 0].set_title("frame", fontsize=8)
    for ax in grid.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


# -- schematics of the two methods (drawn, not copied from the papers) -----------------------------
def _box(ax, x, y, text, color, w=0.16, h=0.1, fontsize=8):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01",
                                facecolor=color, edgecolor="black", linewidth=0.8, alpha=0.9))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, color="black", text=None, style="-|>", linestyle="-", offset=(0, 0.03),
           fontsize=7):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=color, lw=1.2,
                                                          linestyle=linestyle, shrinkA=2, shrinkB=2))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                ha="center", va="center", fontsize=fontsize, color=color)


def _canvas(title: str) -> tuple[Figure, object]:
    """A blank 11 x 4.2 inch figure whose one axes spans it in unit coordinates, titled."""
    fig = Figure(figsize=(11, 4.2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.axis("off")
    ax.text(0.01, 0.95, title, fontsize=11, weight="bold")
    return fig, ax


def hdc_schematic(levels: tuple[str, ...] = ("layer2", "layer3", "layer4"), path=None) -> Figure:
    """HDC as implemented: two windows a, b of a video and two appearance draws theta1, theta2 make
    three views; (v1, v3) is the spatial positive (SC), (v1, v2) the temporal positive (TC) with
    v3 (and optionally v1 reversed) as its hard negatives; an SC and a TC head on every tapped
    stage, and one loss weighted per term by its invariance."""
    fig, ax = _canvas("HDC: decouple by which augmentation a pair differs in, at every level")
    # the video and its two windows
    ax.add_patch(Rectangle((0.03, 0.48), 0.2, 0.05, facecolor="#dddddd", edgecolor="black"))
    for x0, name in ((0.05, "a"), (0.13, "b")):
        ax.add_patch(Rectangle((x0, 0.48), 0.06, 0.05, facecolor="#9ecae1", edgecolor="black"))
        ax.text(x0 + 0.03, 0.505, name, ha="center", va="center", fontsize=9)
    ax.text(0.13, 0.56, "one video: windows a, b", ha="center", fontsize=8)
    ax.text(0.13, 0.44, "appearance draws θ1, θ2\n(crop, colour, channel order...)", ha="center",
            va="top", fontsize=7)
    views = {"v1": (0.36, 0.78, "v1 = S(a; θ1)"), "v2": (0.36, 0.5, "v2 = S(a; θ2)"),
             "v3": (0.36, 0.22, "v3 = S(b; θ1)")}
    for x, y, text in views.values():
        _box(ax, x, y, text, "#fdd0a2")
        _arrow(ax, (0.24, 0.505), (x - 0.085, y))
    sc, tc, neg = "tab:blue", "tab:green", "tab:red"
    _arrow(ax, (0.45, 0.76), (0.45, 0.52), tc, "TC positive:\nsame frames,\nother look", style="<|-|>",
           offset=(0.05, 0))
    _arrow(ax, (0.47, 0.79), (0.47, 0.21), sc, None, style="<|-|>")
    ax.text(0.53, 0.3, "SC positive:\nsame look,\nother frames\n(= TC's hard\nnegative)", color=sc,
            fontsize=7, ha="center", va="center")
    ax.text(0.36, 0.1, "optional TC hard negative: v1 reversed\n(same frames and look, time runs backwards)",
            color=neg, fontsize=7, ha="center", va="center")
    # the backbone's levels with their heads and weights
    n = len(levels)
    for k, level in enumerate(levels):
        y = 0.2 + 0.6 * k / max(1, n - 1)
        _box(ax, 0.68, y, level, "#c7e9c0", w=0.1, h=0.09)
        _box(ax, 0.81, y + 0.035, f"SC head, weight $w^S_{{{level.removeprefix('layer')}}}$", "#c6dbef", w=0.12, h=0.06, fontsize=7)
        _box(ax, 0.81, y - 0.035, f"TC head, weight $w^T_{{{level.removeprefix('layer')}}}$", "#d9f0d3", w=0.12, h=0.06, fontsize=7)
        _arrow(ax, (0.73, y), (0.75, y))
        if k:
            _arrow(ax, (0.68, 0.2 + 0.6 * (k - 1) / max(1, n - 1) + 0.045), (0.68, y - 0.045))
    _arrow(ax, (0.45, 0.5), (0.63, 0.5), text="one backbone pass\nover all views", offset=(0.04, 0.06))
    ax.text(0.93, 0.5, "$L = \\sum_l\\, w^S_l L^S_l + w^T_l L^T_l$\n\n"
            "$w_j = n\\,\\iota_j / \\sum_m \\iota_m$\n\n$\\iota_j = (1 + \\overline{\\cos}_j^+) / 2$:\n"
            "how invariant term $j$\nalready is (EMA)", fontsize=8, va="center", ha="center")
    return _save(fig, path)


def dclr_schematic(path=None) -> Figure:
    """DCLR as implemented: the RGB clip v, its static clip s (one frame repeated) and dynamic clip
    d (frame differences) go through the backbone in one pass; the channel sums of s's and d's
    feature maps (A_s, A_d) pool v's feature map into F_s(v) and F_d(v); five heads, five contrasts
    against the key window."""
    fig, ax = _canvas("DCLR: static scene and dynamic motion, and features pooled by their maps")
    clips = {"v": (0.08, 0.75, "v: RGB clip"), "s": (0.08, 0.5, "s: one frame\nrepeated"),
             "d": (0.08, 0.25, "d: v_t − v_{t−1}")}
    for name, (x, y, text) in clips.items():
        _box(ax, x, y, text, "#fdd0a2", w=0.13)
    _box(ax, 0.27, 0.5, "backbone f\n(one pass)", "#c7e9c0", w=0.12, h=0.5)
    maps = {"v": (0.45, 0.75, "f(v)"), "s": (0.45, 0.5, "f(s) → A_s = Σ_c f_c(s)"),
            "d": (0.45, 0.25, "f(d) → A_d = Σ_c f_c(d)")}
    for name, (x, y, text) in maps.items():
        _arrow(ax, (clips[name][0] + 0.065, clips[name][1]), (0.21, clips[name][1]))
        _arrow(ax, (0.33, y), (x - 0.09, y))
        _box(ax, x, y, text, "#e5f5e0", w=0.18, fontsize=7)
    pooled = {"vv": (0.68, 0.86, "GAP f(v)"), "vs": (0.68, 0.68, "F_s(v): f(v) pooled by A_s"),
              "vd": (0.68, 0.5, "F_d(v): f(v) pooled by A_d"), "sv": (0.68, 0.32, "GAP f(s)"),
              "dv": (0.68, 0.14, "GAP f(d)")}
    for term, (x, y, text) in pooled.items():
        _box(ax, x, y, f"{text}  → g_{term}", "#c6dbef", w=0.2, h=0.08, fontsize=7)
    _arrow(ax, (0.54, 0.75), (0.58, 0.86))
    _arrow(ax, (0.54, 0.75), (0.58, 0.68))
    _arrow(ax, (0.54, 0.75), (0.58, 0.5))
    _arrow(ax, (0.54, 0.5), (0.58, 0.66), "tab:orange", linestyle="--")
    _arrow(ax, (0.54, 0.25), (0.58, 0.48), "tab:purple", linestyle="--")
    _arrow(ax, (0.54, 0.5), (0.58, 0.32))
    _arrow(ax, (0.54, 0.25), (0.58, 0.14))
    ax.text(0.89, 0.5, "five contrasts with the\nkey window's features:\n\n"
            "ℓ(z_vv, k_vv)\nℓ(z_vs, k_sv)   ℓ(z_sv, k_vs)\nℓ(z_vd, k_dv)   ℓ(z_dv, k_vd)\n\n"
            "dashed: the maps\nweight the pooling", fontsize=8, ha="center", va="center")
    return _save(fig, path)
