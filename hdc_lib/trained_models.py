"""Where a notebook's trained model comes from, in this order: the user's own finished run of
`hdc reproduce` (make demo's `toy` preset, or `full`), the weights that ship with the project
(hdc_lib/shipped_weights.py), or else a short run trained on the spot. `find_or_train` says in one
line which one it returned."""
from __future__ import annotations

from pathlib import Path

import torch

from hdc_lib.checkpoint import load_checkpoint
from hdc_lib.errors import UserError
from hdc_lib.experiment import build_dataset, load_config
from hdc_lib.reproduce import (CONFIGS, PRESETS, load_model, preset_run_config, run_config, same_config,
                               trained_model)
from hdc_lib.runtime import setup
from hdc_lib.shipped_weights import load_shipped, manifest_path, read_manifest


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def own_run(row: str, root: Path, seed: int, presets: tuple[str, ...], device):
    """(config, model, line) of the user's finished `hdc reproduce` run of `row` under `root`, or None."""
    for name in presets:
        preset = PRESETS[name]
        if row not in preset.rows or seed not in preset.seeds:
            continue
        world, runs = root / "data/toyworld", root / "runs/reproduce" / name
        final = runs / row / f"seed{seed}" / "final.pt"
        if not final.exists():
            continue
        train_set = build_dataset(run_config(row, preset, seed, world, runs, 1), True, None)
        cfg = preset_run_config(preset, row, seed, world, runs, len(train_set))
        state = load_checkpoint(final)
        if same_config(state["config"], cfg):
            line = f"the `hdc reproduce --preset {name}` run ({_epochs(cfg.train.epochs)}, {final.parent.relative_to(root)})"
            return cfg, load_model(cfg, state["model"], len(train_set.classes), device), line
    return None


def find_or_train(row: str, root: str | Path, short: list[str], seed: int = 0,
                  presets: tuple[str, ...] = ("toy", "full")) -> tuple[object, torch.nn.Module]:
    """(config, model) of `row` for a notebook, the first of: the user's own run that `hdc
    reproduce` finished under `root` (the `presets` in order); the weights shipped in
    root/results/<preset>_runs/ for a preset with records; a short run, trained here with the
    config's own settings plus the `short` overrides (its world, out_dir, epochs...). Says in one
    line which one it is (and why shipped weights were refused, if they were)."""
    root = Path(root)
    device = setup().device
    if found := own_run(row, root, seed, presets, device):
        print(f"{row}: {found[2]}")
        return found[:2]
    refused = ""
    for name in (n for n in presets if PRESETS[n].records and seed == 0):
        manifest = manifest_path(root / "results", name)
        if row not in read_manifest(manifest):
            continue
        try:
            cfg, model = load_shipped(name, row, root / "results", root / "data/toyworld", root / "runs/reproduce" / name,
                                      device)
        except UserError as err:
            refused = f" (the shipped weights were refused: {err})"
            continue
        entry = read_manifest(manifest)[row]
        # The run's files that ship are its record's (metrics.jsonl thinned to every fifth step,
        # record.json with its probes and probe-vs-step curve): read_metrics and probe_curve find
        # them where they find a run's own.
        cfg.train.out_dir = str((manifest.parent / entry["file"]).parent)
        print(f"{row}: the weights shipped from the `{name}` preset's run ({entry['steps']} steps, seed 0, "
              f"{(manifest.parent / entry['file']).relative_to(root)})")
        return cfg, model
    cfg = load_config(CONFIGS / f"{row}.yaml", short)
    out = Path(cfg.train.out_dir)
    print(f"{row}: no finished `hdc reproduce` run here (make demo trains {', '.join(PRESETS['toy'].rows)}) "
          f"and no shipped weights{refused}, so a short run of {_epochs(cfg.train.epochs)} "
          f"({out.relative_to(root) if out.is_relative_to(root) else out})")
    classes = len(build_dataset(cfg, True, None).classes)
    return cfg, trained_model(cfg, classes, device, progress=False)
