"""Where a notebook's trained model comes from: the run `hdc reproduce` finished here (make demo's
`toy` preset or the `full` one), otherwise a short run trained on the spot. `find_or_train` says in
one line which one it returned."""
from __future__ import annotations

from pathlib import Path

import torch

from hdc_lib.checkpoint import load_checkpoint
from hdc_lib.experiment import build_dataset, load_config
from hdc_lib.reproduce import (CONFIGS, PRESETS, SUPERVISED, comparable, epochs_for, load_model, run_config,
                               trained_model)
from hdc_lib.runtime import setup


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def find_or_train(row: str, root: str | Path, short: list[str], seed: int = 0,
                  presets: tuple[str, ...] = ("toy", "full")) -> tuple[object, torch.nn.Module]:
    """(config, model) of `row` for a notebook: the run `hdc reproduce` trained (make demo's `toy`
    preset first, then `full`) when it finished under `root`; otherwise a short run, trained here
    with the config's own settings plus the `short` overrides (its world, out_dir, epochs...).
    Says in one line which of the two it is."""
    root = Path(root)
    device = setup().device
    for name in presets:
        preset = PRESETS[name]
        if row not in preset.rows or seed not in preset.seeds:
            continue
        world, runs = root / "data/toyworld", root / "runs/reproduce" / name
        final = runs / row / f"seed{seed}" / "final.pt"
        if not final.exists():
            continue
        videos = len(build_dataset(run_config(row, preset, seed, world, runs, 1), True, None))
        steps = preset.supervised_steps if row in SUPERVISED else preset.steps
        cfg = run_config(row, preset, seed, world, runs, epochs_for(steps, videos, preset.batch_size),
                         curve=seed == preset.seeds[0] and preset.curve_points > 0)
        state = load_checkpoint(final)
        if comparable(state["config"]) == comparable(cfg.to_dict()):
            print(f"{row}: the `hdc reproduce --preset {name}` run ({_epochs(cfg.train.epochs)}, "
                  f"{final.parent.relative_to(root)})")
            return cfg, load_model(cfg, state["model"], len(build_dataset(cfg, True, None).classes), device)
    cfg = load_config(CONFIGS / f"{row}.yaml", short)
    out = Path(cfg.train.out_dir)
    print(f"{row}: no finished `hdc reproduce` run here (make demo trains {', '.join(PRESETS['toy'].rows)}), "
          f"so a short run of {_epochs(cfg.train.epochs)} ({out.relative_to(root) if out.is_relative_to(root) else out})")
    classes = len(build_dataset(cfg, True, None).classes)
    return cfg, trained_model(cfg, classes, device, progress=False)

