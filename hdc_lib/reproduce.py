"""The toy-scale reproduction behind `make demo`: every ablation of the two papers on the toy world,
several seeds, evaluated by the toy-world probes, written as a table and figures.

    hdc reproduce --preset toy      # results/toy_ablation.md + figures/toy_*.png (the demo)
    hdc reproduce --preset smoke    # a minute-scale run of the same pipeline (used by the tests)

Rows: the coupled baseline; HDC's ablations (SC only, TC only, single level, hierarchical with
uniform weights, hierarchical with invariance weights); DCLR; and two references, a randomly
initialised backbone and the same backbone trained on the labels. Every run is a normal
`hdc pretrain` run in runs/reproduce/<preset>/<variant>/seed<k>: an interrupted reproduction
resumes where it stopped, and a finished run is not trained again.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hdc_lib import viz
from hdc_lib.checkpoint import load_checkpoint
from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.experiment import build_dataset, build_method, load_config
from hdc_lib.probes import toy_probes
from hdc_lib.runtime import setup
from hdc_lib.train import ConfigMismatch, train

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toy"
VARIANTS = ("coupled", "sc_only", "tc_only", "hdc_single", "hdc_uniform", "hdc", "dclr")
REFERENCES = ("random_init", "supervised")
METRICS = ("action", "object", "scene", "fg_ratio", "R@1", "R@5", "R@10")


@dataclass(frozen=True)
class Preset:
    world: dict = field(default_factory=dict)   # toy-world arguments (defaults: the full world)
    epochs: int = 10
    supervised_epochs: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 64
    knn_every: int = 5
    eval_clips: int = 4


# "toy" is sized to the 25-minute budget of `make demo` on 2 CPU cores: 24 training runs of
# about 1.5-6 s per epoch (results/bench.md has the measured times). The supervised reference is
# cheap and trains 40 epochs: the calibrated point where the toy world's motion has been learned.
PRESETS = {
    "toy": Preset(supervised_epochs=40),
    "smoke": Preset(world={"videos_per_class": 8, "frames": 24, "size": 48}, epochs=1,
                    supervised_epochs=1, seeds=(0,), batch_size=16, knn_every=1, eval_clips=2),
}


def run_config(variant: str, preset: Preset, seed: int, world_dir: Path, runs_dir: Path):
    epochs = preset.supervised_epochs if variant == "supervised" else preset.epochs
    return load_config(CONFIGS / f"{variant}.yaml", [
        f"data.root={world_dir}", f"data.toyworld={json.dumps(preset.world)}",
        f"train.seed={seed}", f"train.epochs={epochs}", f"train.batch_size={preset.batch_size}",
        f"train.knn_every={preset.knn_every}",
        f"train.out_dir={runs_dir / variant / f'seed{seed}'}"])


def trained_model(cfg, num_classes: int, device, progress: bool):
    """The run's final model; trained first unless a finished run with this config exists."""
    run_dir = Path(cfg.train.out_dir)
    final = run_dir / "final.pt"
    state = load_checkpoint(final) if final.exists() else None
    if state is None or state["config"] != cfg.to_dict():
        try:
            train(cfg, resume=True, progress=progress)
        except ConfigMismatch as err:  # a run of an older preset or config: keep it aside, train afresh
            stale = run_dir.with_name(run_dir.name + ".stale")
            shutil.rmtree(stale, ignore_errors=True)
            run_dir.rename(stale)
            log.warning("%s; moved it to %s", err, stale)
            train(cfg, resume=True, progress=progress)
        state = load_checkpoint(final)
    model = build_method(cfg, num_classes=num_classes)
    model.load_state_dict(state["model"])
    return model.to(device)


def reproduce(preset_name: str = "toy", world_dir: str | Path | None = None,
              runs_dir: str | Path | None = None, results_dir: str | Path = "results",
              figures_dir: str | Path = "figures", progress: bool = True) -> dict:
    preset = PRESETS[preset_name]
    started = time.perf_counter()
    world_dir = Path(world_dir or ("data/toyworld" if preset_name == "toy" else f"data/toyworld_{preset_name}"))
    runs_dir = Path(runs_dir or f"runs/reproduce/{preset_name}")
    device = setup().device
    num_actions = len(build_dataset(run_config("coupled", preset, 0, world_dir, runs_dir), True, None).classes)
    scores: dict[str, list[dict]] = {name: [] for name in (*VARIANTS, *REFERENCES)}
    models = {}
    for seed in preset.seeds:
        for variant in (*VARIANTS, "supervised"):
            cfg = run_config(variant, preset, seed, world_dir, runs_dir)
            if progress:
                print(f"[{time.perf_counter() - started:6.0f}s] {variant} seed {seed}", flush=True)
            model = trained_model(cfg, num_actions, device, progress)
            scores[variant].append(toy_probes(cfg, model.backbone, model.augment.center, device,
                                              preset.eval_clips))
            if seed == preset.seeds[0]:
                models[variant] = model
        torch.manual_seed(seed)
        cfg = run_config("coupled", preset, seed, world_dir, runs_dir)
        random_model = build_method(cfg).to(device)
        scores["random_init"].append(toy_probes(cfg, random_model.backbone, random_model.augment.center,
                                                device, preset.eval_clips))
    seconds = time.perf_counter() - started
    table = {name: {m: viz.mean_std([s[m] for s in runs]) for m in METRICS} for name, runs in scores.items()}

    figures = Path(figures_dir)
    prefix = f"{preset_name}_"
    chance = {"action": 1 / num_actions}
    viz.ablation_bars(table, ("action", "object", "scene", "fg_ratio"), chance,
                      path=figures / f"{prefix}ablation.png")
    first = f"seed{preset.seeds[0]}"
    viz.training_curves({v: runs_dir / v / first for v in VARIANTS}, path=figures / f"{prefix}training_curves.png")
    viz.level_weights(runs_dir / "hdc" / first, path=figures / f"{prefix}level_weights.png")
    test_cfg = run_config("coupled", preset, 0, world_dir, runs_dir)
    panel_set = build_dataset(test_cfg, False, None)
    panel_set.clip_sampler = UniformClipSampler(test_cfg.model.clip_frames, test_cfg.model.clip_stride, 1)
    picks = torch.linspace(0, len(panel_set) - 1, 4).round().long().tolist()
    clips = torch.stack([panel_set[i]["video"][0] for i in picks])
    viz.activation_panels(models, clips, device, path=figures / f"{prefix}activation_maps.png")

    report = {"preset": preset_name, "seconds": round(seconds, 1), "seeds": list(preset.seeds),
              "epochs": preset.epochs, "supervised_epochs": preset.supervised_epochs,
              "num_actions": num_actions, "table": table, "per_seed": scores,
              "commit": _commit(), "machine": _machine(device)}
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{prefix}ablation.json").write_text(json.dumps(report, indent=1) + "\n")
    (results / f"{prefix}ablation.md").write_text(markdown_report(report, preset_name))
    if progress:
        print(markdown_report(report, preset_name))
    return report


def markdown_report(report: dict, preset_name: str) -> str:
    lines = [f"# Toy-world ablation (preset `{preset_name}`)", "",
             f"Command: `hdc reproduce --preset {preset_name}` · commit `{report['commit']}` · "
             f"{report['machine']} · {report['seconds'] / 60:.1f} min in total.", "",
             f"Seeds {report['seeds']}; {report['epochs']} pretraining epochs per run "
             f"({report['supervised_epochs']} for the supervised reference). Mean ± std over seeds. "
             f"Chance for action is {1 / report['num_actions']:.3f}. action: linear probe fitted on "
             "the scene-biased train split, tested on the scene-unbiased test split; object / scene: "
             "linear probes cross-fitted on halves of the test split; fg_ratio: activation mass on the "
             "moving object relative to its area (1 = no preference); R@k: test-to-train retrieval "
             "by action.", "",
             "| run | " + " | ".join(METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for name, row in report["table"].items():
        cells = [f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    """The commit the run used, marked "+changes" when the work tree differed from it."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    try:
        return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine(device) -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, device {device}, torch {torch.__version__}"
