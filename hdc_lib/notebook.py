"""What the teaching notebooks (notebooks/00-08) share: the setup every one of them starts with, the
probes of the trained models they load (`trained_probes`: stored with the run or with the shipped
weights, computed only when none are), whether results/full_ablation.json was made from the records
now shipped (`ablation_from_records`), and the small tables their conclusions show.

`setup_notebook` does in one call what each notebook's first cell needs: where the repository is,
which mode it runs in (`HDC_FAST=1`, what the tests execute: a tiny world and runs of at most two
epochs; otherwise the default world), the toy world itself (rendered if missing), the seed, the
device and the figure style. The `NotebookSetup` it returns also gives the overrides of a notebook's
short run, the run `find_or_train` trains when no finished run of a row exists.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from hdc_lib.data.toyworld import VERSION as WORLD_VERSION, ensure_toyworld
from hdc_lib.features import eval_transform
from hdc_lib.probes import toy_probes
from hdc_lib.reproduce import PRESETS, run_probes
from hdc_lib.shipped_weights import MANIFEST
from hdc_lib.viz import read_metrics

# Fast mode's world: 8 videos per action, 24 frames of 48 px (data/toyworld_fast); the tests run on it.
FAST_WORLD = {"videos_per_class": 8, "frames": 24, "size": 48}
# A short run in fast mode trains at most this many epochs, and every short run uses these batches.
FAST_SHORT_EPOCHS = 2
SHORT_BATCH = {"fast": 16, "default": 64}
# Matplotlib's look in every notebook: 100-dpi figures; light grid lines unless seaborn's white theme.
FIGURE_STYLE = {"figure.dpi": 100, "savefig.dpi": 100}
GRID_STYLE = {"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8, "axes.grid": True, "grid.alpha": 0.3}


def repository_root() -> Path:
    """The repository's folder: the parent of notebooks/ when run from there (Jupyter's working
    directory is the notebook's folder), else the working directory itself."""
    cwd = Path.cwd()
    return cwd.parent if cwd.name == "notebooks" else cwd


def fast_mode() -> bool:
    """HDC_FAST=1: the tiny world and runs of at most two epochs (what `make test` executes)."""
    return os.environ.get("HDC_FAST") == "1"


@dataclass(frozen=True)
class NotebookSetup:
    """One notebook's settings, as `setup_notebook` made them."""

    name: str                     # the notebook's file name without .ipynb: its run folder's name
    fast: bool
    root: Path
    world: Path                   # the toy world's folder, rendered
    world_args: dict              # its generation arguments (empty: the defaults)
    world_rendered: bool          # whether setup_notebook rendered it just now
    device: torch.device
    seed: int
    presets: tuple[str, ...]      # the `hdc reproduce` presets whose runs find_or_train may load
    short_epochs: int             # a short run's budget in this mode
    short_batch: int

    @property
    def mode(self) -> str:
        return "fast" if self.fast else "default"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def run_dir(self) -> Path:
        """Where this notebook's short runs live: one folder per world version and mode, so a run
        of an older world, or of the other mode, is never resumed or taken for a finished one."""
        return self.root / "runs/notebooks" / self.name / f"world{WORLD_VERSION}" / self.mode

    def short_overrides(self, row: str, *extra: str, checkpoints: bool = False) -> list[str]:
        """`find_or_train`'s `short` overrides of `row`: this notebook's world, run folder, budget and
        seed, no kNN monitor, a metrics line every step. `checkpoints`: a checkpoint every third of
        the run (four kept), the points of a probe curve. `extra`: further overrides, applied last."""
        overrides = [f"data.root={self.world}", f"data.toyworld={json.dumps(self.world_args)}",
                     f"train.out_dir={self.run_dir / row}", f"train.epochs={self.short_epochs}",
                     f"train.batch_size={self.short_batch}", f"train.seed={self.seed}",
                     "train.knn_every=0", "train.log_every=1"]
        if checkpoints:
            overrides += [f"train.checkpoint_every={max(1, self.short_epochs // 3)}", "train.keep_checkpoints=4"]
        return overrides + list(extra)


def style_figures(formats: str = "jpeg", seaborn: bool = False, rc: dict | None = None) -> None:
    """Matplotlib's look for a notebook: 100-dpi figures, seaborn's white theme (font scale 0.8) or
    light grid lines, then `rc` (matplotlib rcParams, e.g. {"legend.fontsize": 7}). `formats`: how
    a Jupyter kernel stores inline figures; "jpeg" for photographs (several times smaller than PNG),
    "png" for line art. Outside a kernel only the rcParams apply."""
    if seaborn:
        import seaborn as sns

        sns.set_theme(style="white", font_scale=0.8)
    plt.rcParams.update({**FIGURE_STYLE, **({} if seaborn else GRID_STYLE), **(rc or {})})
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "kernel"):
        shell.run_line_magic("config", f"InlineBackend.figure_formats = [{formats!r}]")


def setup_notebook(name: str, presets: tuple[str, ...] = ("toy",), short_epochs: int = 10, seed: int = 0,
                   figures: str = "jpeg", seaborn: bool = False, rc: dict | None = None) -> NotebookSetup:
    """Everything a notebook sets up first: its mode, the repository root, the world (rendered if
    missing), numpy's and torch's seed, the device and the figure style (`style_figures(figures,
    seaborn, rc)`).

    presets: the `hdc reproduce` presets whose finished runs `find_or_train` may load in the default
    mode (none in fast mode: its tiny world is not theirs). short_epochs: the budget of a short run in
    the default mode; fast mode trains at most FAST_SHORT_EPOCHS.
    """
    fast, root = fast_mode(), repository_root()
    world, world_args = (root / "data/toyworld_fast", dict(FAST_WORLD)) if fast else (root / "data/toyworld", {})
    rendered = ensure_toyworld(world, progress=False, **world_args)["rendered"]
    np.random.seed(seed)
    torch.manual_seed(seed)
    style_figures(figures, seaborn, rc)
    return NotebookSetup(name=name, fast=fast, root=root, world=world, world_args=world_args, world_rendered=rendered,
                         device=torch.device("cuda" if torch.cuda.is_available() else "cpu"), seed=seed,
                         presets=() if fast else tuple(presets),
                         short_epochs=min(FAST_SHORT_EPOCHS, short_epochs) if fast else short_epochs,
                         short_batch=SHORT_BATCH["fast" if fast else "default"])


def invariance_ordering(values: dict[str, dict[str, float]], levels, subtasks,
                        decimals: int = 4) -> dict[tuple[str, str], dict]:
    """Where the lowest level stands among each subtask's levels, for every source of per-term values
    (HDC's premise: the lowest level is the least invariant). values: {source: {"<subtask>_<level>":
    value}}, e.g. each term's invariance in one run. Returns {(source, subtask): {level: value
    (rounded), "least -> most invariant": the levels in increasing order of value, "<lowest level>
    is": "the least invariant", "the most invariant" or "in between"}}, ordered from the exact values."""
    lowest = levels[0]
    rows = {}
    for source, terms in values.items():
        for subtask in subtasks:
            own = {level: terms[f"{subtask}_{level}"] for level in levels}
            ranked = sorted(own, key=own.get)
            place = ("the least invariant" if ranked[0] == lowest else
                     "the most invariant" if ranked[-1] == lowest else "in between")
            rows[(source, subtask)] = {**{level: round(v, decimals) for level, v in own.items()},
                                       "least -> most invariant": " < ".join(ranked), f"{lowest} is": place}
    return rows


def measurement_rows(values: dict[str, dict[str, float]], decimals: dict[str, int],
                     reference: dict[str, float] | None = None) -> list[dict]:
    """A conclusion's small table: one row per measurement (the keys of `decimals`, in that order),
    one column per source of `values` ({source: {measurement: value}}, e.g. per model), each value
    rounded to its measurement's decimals as numpy (and pandas' `round`) rounds, so each equals what
    the table it came from shows; a "reference" column (e.g. chance, or 1 for no preference) where
    `reference` gives one."""
    rows = []
    for measurement, places in decimals.items():
        row = {"measurement": measurement,
               **{source: float(np.round(float(v[measurement]), places)) for source, v in values.items()}}
        if reference is not None:
            row["reference"] = reference.get(measurement)
        rows.append(row)
    return rows


def _record_folder_entry(folder: Path) -> tuple[str, dict] | None:
    """(preset, manifest entry) of the shipped file in a record folder results/<preset>_runs/<row>/seed0/,
    or None when the preset's manifest ships none there."""
    manifest = folder.parent.parent / MANIFEST
    if not manifest.exists():
        return None
    saved = json.loads(manifest.read_text())
    for entry in saved["rows"].values():
        if (manifest.parent / entry["file"]).parent.resolve() == folder.resolve():
            return saved["preset"], entry
    return None


def _shown(path: Path, root: Path | None) -> str:
    """A path as a notebook prints it: relative to the repository root when under it."""
    return str(path.resolve().relative_to(root.resolve())) if root is not None and path.resolve().is_relative_to(
        root.resolve()) else str(path)


def stored_probes(run_dir: str | Path, root: str | Path | None = None) -> tuple[dict, str, int] | None:
    """The toy probes stored with a trained model's files, computed by nobody here: (probes, where they
    were read, clips per video they were computed with), or None.

    - a run folder (`hdc reproduce`'s own run, a notebook's short run): its probes.json, when it was
      computed from the final.pt beside it (`reproduce.run_probes`' cache);
    - a record folder results/<preset>_runs/<row>/seed0/ (what `find_or_train` gives as out_dir for
      shipped weights; no final.pt there): the probes the preset's manifest lists for the file as
      shipped (its own, possibly float16, weights), else the record's run.probes (the run's weights
      before the export).
    `root`: where paths are shown relative to (the repository's root)."""
    folder, root = Path(run_dir), None if root is None else Path(root)
    final, cache = folder / "final.pt", folder / "probes.json"
    if final.exists():
        if not cache.exists():
            return None
        saved = json.loads(cache.read_text())
        key = {"final_size": final.stat().st_size, "final_mtime": final.stat().st_mtime_ns}
        if {k: saved["key"].get(k) for k in key} != key:
            return None
        return saved["probes"], _shown(cache, root), int(saved["key"]["clips"])
    if shipped := _record_folder_entry(folder):
        preset, entry = shipped
        shown = _shown(folder.parent.parent / MANIFEST, root)
        return entry["probes"], f"{shown} ({entry['file']} as shipped)", PRESETS[preset].eval_clips
    record = folder / "record.json"
    if record.exists() and folder.parent.parent.name.endswith("_runs"):
        preset = folder.parent.parent.name[:-len("_runs")]
        if preset in PRESETS:
            return json.loads(record.read_text())["run"]["probes"], _shown(record, root), PRESETS[preset].eval_clips
    return None


def trained_probes(cfg, model, device, num_clips: int, root: str | Path | None = None) -> tuple[dict, str]:
    """The toy probes of a model `find_or_train` returned, and where they come from: the stored ones
    (`stored_probes`) when they were computed with `num_clips` clips per video; else, for a run folder,
    `reproduce.run_probes` (computed and cached beside its final.pt); else (a record folder, which is
    the project's files and no cache) `probes.toy_probes` computed here, nothing written. `root`: where
    the paths it names are shown relative to."""
    folder, root = Path(cfg.train.out_dir), None if root is None else Path(root)
    stored = stored_probes(folder, root)
    if stored is not None and stored[2] == num_clips:
        return stored[0], f"read from {stored[1]}"
    if (folder / "final.pt").exists():
        return run_probes(cfg, model, device, num_clips), f"computed and cached in {_shown(folder / 'probes.json', root)}"
    return toy_probes(cfg, model.backbone, eval_transform(model), device, num_clips), "computed here"


def ablation_from_records(results_dir: str | Path, rows, preset: str = "full") -> tuple[dict | None, str]:
    """results/<preset>_ablation.json, when it was made from the records now in results/<preset>_runs/
    for every one of `rows` (each seed's probes in the report equal to its record's run.probes), and
    a line that says so; else (None, a line that says why not: a record missing or retrained since)."""
    results = Path(results_dir)
    path = results / f"{preset}_ablation.json"
    shown = path.relative_to(results.parent)         # results/<preset>_ablation.json, as the README names it
    if not path.exists():
        return None, f"{shown} does not exist"
    report = json.loads(path.read_text())
    for row in rows:
        if row not in report["per_seed"]:
            return None, f"{shown} has no row {row}"
        for seed, probes in zip(report["seeds"], report["per_seed"][row]):
            record = results / f"{preset}_runs" / row / f"seed{seed}" / "record.json"
            if not record.exists():
                return None, f"{shown} predates the records: {record.relative_to(results.parent)} is missing"
            if json.loads(record.read_text())["run"]["probes"] != probes:
                return None, f"{shown} predates the records: {row} seed {seed} was retrained since"
    return report, f"{shown} (commit {report['commit']}, seeds {report['seeds']}), made from the records of {', '.join(rows)}"


def optimiser_steps(cfg, train_videos: int) -> int:
    """How many optimiser steps a run took: its epoch records times the steps of one epoch (the train
    videos in whole global batches, the last incomplete one dropped, as `train.epoch_batches` cuts them).
    A record (shipped weights) keeps only every fifth step record, so its last step record is not the
    run's last step."""
    return len(read_metrics(cfg.train.out_dir, "epoch")) * (train_videos // cfg.train.batch_size)
