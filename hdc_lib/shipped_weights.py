"""Trained weights that ship with the project, so that a clone can show every method trained
without training it: the seed-0 run of each row of a preset, cut down to what the notebooks read
(the backbone and the row's named parts), in half precision where that moves no probe by more than
FP16_TOLERANCE (and where float32 would not fit in MAX_ROW_BYTES: see export_run), next to the run's record in results/<preset>_runs/<row>/seed0/weights.pt.

One manifest per preset, results/<preset>_runs/shipped_weights.json, says for each file its
sha256 and size, the run's config, the toy-world version, the commit the run was trained at, its
probes as shipped and a fingerprint (the features of a few fixed clips). A file is loaded with
`torch.load(weights_only=True)`, and only when its hash, its config (the one `hdc reproduce`
would train today) and its world version match; otherwise it is refused with a one-line
`UserError` that says which of them does not.

    hdc reproduce --preset full --measure-fp16 [--rows a,b]    the largest probe change in float16
    hdc reproduce --preset full --export-weights [--rows a,b]   write the files and the manifest
    hdc reproduce --preset full --check-weights                 verify every shipped file

The files are named weights.pt, which .gitignore's `*.pt` keeps out of commits: shipping them takes
an exception there (`!results/*_runs/*/seed0/weights.pt`) once the weights to ship exist.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from hdc_lib.checkpoint import load_checkpoint, save_checkpoint
from hdc_lib.config import ConfigError
from hdc_lib.data.toyworld import VERSION as WORLD_VERSION, ToyWorld
from hdc_lib.errors import UserError
from hdc_lib.experiment import build_method, saved_run_config
from hdc_lib.features import eval_transform
from hdc_lib.probes import toy_probes
from hdc_lib.provenance import code_commit
from hdc_lib.reproduce import PRESETS, Plan, comparable, finished_state, preset_run_config, run_probes

MANIFEST = "shipped_weights.json"
WEIGHTS = "weights.pt"
MAX_ROW_BYTES = 1_500_000        # 1.5 MB per row's file
MAX_TOTAL_BYTES = 25_000_000     # 25 MB for a preset's files together
FP16_TOLERANCE = 0.005           # the largest probe change half precision may cause
FINGERPRINT_CLIPS = 2
# What the notebooks read of each method besides its backbone: HDC's heads and level weights
# (notebooks 03 and 04), the supervised classifier (notebook 00). Coupled's and DCLR's heads are
# only read untrained, so they do not ship (DCLR's five heads would not fit in MAX_ROW_BYTES).
SHIPPED_PARTS = {"hdc": ("online.backbone.", "online.heads.", "invariance"),
                 "coupled": ("online.backbone.",), "dclr": ("online.backbone.",),
                 "supervised": ("online.backbone.", "classifier.")}


def manifest_path(results_dir: str | Path, preset_name: str) -> Path:
    return Path(results_dir) / f"{preset_name}_runs" / MANIFEST


def read_manifest(path: Path) -> dict:
    """{row: entry}; empty while nothing is shipped."""
    return json.loads(path.read_text())["rows"] if path.exists() else {}


def manifest_page(preset_name: str, entries: dict[str, dict]) -> str:
    """The manifest as a page a reader can scan (shipped_weights.md beside it): each row's file,
    precision, size and float16 probe change, with the policy that chose the precision."""
    total = sum(e["bytes"] for e in entries.values())
    lines = [f"# Shipped weights of the `{preset_name}` preset", "",
             f"Seed 0 of each row, cut to what the notebooks read, {total / 1e6:.1f} MB in all (limit "
             f"{MAX_TOTAL_BYTES / 1e6:g} MB; {MAX_ROW_BYTES / 1e6:g} MB per row). A row ships in float16 when that moves no "
             f"probe by more than {FP16_TOLERANCE}; else in float32 if that fits the row limit; else in float16 marked "
             "over tolerance, with the float16 model's own probes in the manifest (the "
             "probes' own refitting noise is larger than the tolerance: results/probe_noise_floor.jsonl). Written from "
             f"{MANIFEST} by `hdc reproduce --preset {preset_name} --export-weights` (or `--check-weights`).", "",
             "| row | precision | size (MB) | largest float16 probe change | within tolerance | steps | trained at | exported at |",
             "|---|---|---|---|---|---|---|---|"]
    for row, e in entries.items():
        change, probe = e["fp16_probe_change"]
        lines.append(f"| {row} | {e['dtype']} | {e['bytes'] / 1e6:.2f} | {change:.4f} ({probe}) | "
                     f"{'no' if e['over_tolerance'] else 'yes'} | {e['steps']} | `{e['trained_at']}` | `{e['exported_at']}` |")
    return "\n".join(lines) + "\n"


def write_manifest(manifest: Path, preset_name: str, entries: dict[str, dict]) -> None:
    """The manifest and its page, side by side."""
    manifest.write_text(json.dumps({"preset": preset_name, "rows": entries}, indent=1) + "\n")
    write_manifest_page(manifest, preset_name, entries)


def write_manifest_page(manifest: Path, preset_name: str, entries: dict[str, dict]) -> None:
    """The manifest's page (`manifest_page`) beside it, the manifest itself untouched."""
    manifest.with_suffix(".md").write_text(manifest_page(preset_name, entries))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_sizes(entries: dict[str, dict], manifest: Path) -> None:
    """Each row's file within MAX_ROW_BYTES and all of them within MAX_TOTAL_BYTES."""
    for entry in entries.values():
        if entry["bytes"] > MAX_ROW_BYTES:
            raise UserError(f"{entry['bytes']} bytes, over the {MAX_ROW_BYTES} a row may ship",
                            manifest.parent / entry["file"])
    total = sum(entry["bytes"] for entry in entries.values())
    if total > MAX_TOTAL_BYTES:
        raise UserError(f"{len(entries)} rows ship {total} bytes, over the {MAX_TOTAL_BYTES} allowed in all", manifest)


def differing_keys(saved: dict, today: dict) -> list[str]:
    """The dotted keys whose values differ between two configs (sections one level deep)."""
    keys = []
    for section in sorted(set(saved) | set(today)):
        a, b = saved.get(section), today.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            keys.append(section)
    return keys


def shipped_part(model_state: dict, method: str) -> dict:
    """The tensors of a method's state dict that ship: the backbone and the method's named parts."""
    return {k: v for k, v in model_state.items() if k.startswith(SHIPPED_PARTS[method])}


def half(part: dict) -> dict:
    """Floating-point tensors in float16 (counters and other integers as they are)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in part.items()}


def model_from_part(cfg, part: dict, num_classes: int, device, path: Path):
    """A fresh method of `cfg` with the shipped tensors loaded into it (cast back to its own
    precision); the parts that do not ship keep their initial weights."""
    model = build_method(cfg, num_classes=num_classes)
    expected = shipped_part(model.state_dict(), cfg.method)
    if set(part) != set(expected):
        raise UserError(f"holds {len(part)} tensors where a {cfg.method} model ships {len(expected)}", path)
    model.load_state_dict(part, strict=False)
    return model.to(device).eval()


@torch.no_grad()
def fingerprint(cfg, model, device) -> list[list[float]]:
    """The last stage's pooled features of FINGERPRINT_CLIPS fixed random clips (seeded, the
    world's frame size, the model's clip length, through its test-time view)."""
    size = ToyWorld(**cfg.data.toyworld).size
    clips = torch.randint(0, 256, (FINGERPRINT_CLIPS, cfg.model.clip_frames, size, size, 3),
                          generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    stage = model.backbone.stage_names[-1]
    maps = model.backbone.features(eval_transform(model)(clips.to(device)), stages=(stage,))[stage]
    return maps.mean(dim=(2, 3, 4)).float().cpu().tolist()


def probe_change(a: dict[str, float], b: dict[str, float]) -> tuple[float, str]:
    """The largest absolute difference between two sets of probes, and the probe it is in, rounded
    to 1e-9: probes are counts over test videos, so 0.5425 - 0.5375 is two videos, exactly 0.005,
    not the 0.00500000000000012 that float subtraction leaves."""
    return max((round(abs(a[m] - b[m]), 9), m) for m in a)


class HalfPrecisionTrial:
    """A finished run's shipped part probed twice, in float32 and rounded to float16: the largest
    change of any probe (every probe at every level) decides the precision it ships in."""

    def __init__(self, plan: Plan, row: str, device, seed: int = 0):
        self.cfg = plan.config(row, seed)
        state = finished_state(self.cfg)
        if state is None:
            raise UserError(f"no finished run of {row} seed {seed} with the preset's config: hdc reproduce "
                            f"--preset {plan.name} --rows {row} --seeds {seed} trains it", self.cfg.train.out_dir)
        self.row, self.seed, self.part = row, seed, shipped_part(state["model"], self.cfg.method)
        folder, clips = Path(self.cfg.train.out_dir), plan.preset.eval_clips
        self.full = model_from_part(self.cfg, self.part, plan.num_actions, device, folder)
        self.full_probes = run_probes(self.cfg, self.full, device, clips)  # the run's own, cached
        self.halved = model_from_part(self.cfg, half(self.part), plan.num_actions, device, folder)
        self.half_probes = toy_probes(self.cfg, self.halved.backbone, eval_transform(self.halved), device, clips)
        self.change, self.metric = probe_change(self.full_probes, self.half_probes)
        self.fp16 = self.change <= FP16_TOLERANCE

    def line(self) -> str:
        return (f"{self.row} seed{self.seed}: largest probe change float16 vs float32 {self.change:.4f} "
                f"({self.metric}): {'within' if self.fp16 else 'over'} {FP16_TOLERANCE}")


def export_run(plan: Plan, trial: HalfPrecisionTrial, manifest: Path, entries: dict, device) -> dict:
    """Write a run's shipped file beside its record and return its manifest entry. Float16 when that
    moved no probe by more than FP16_TOLERANCE, float32 otherwise; but when float32 is over
    MAX_ROW_BYTES the two limits cannot both hold, and the size limit wins: float16 all the same,
    marked `over_tolerance` in the manifest with the change it causes (its probes are the float16
    model's own). The size limits are checked with the file written aside: a file over them is
    removed and refused, the shipped one kept."""
    folder = plan.sources / trial.row / f"seed{trial.seed}"
    fp16 = trial.fp16
    staged = save_checkpoint(folder / (WEIGHTS + ".export"), half(trial.part) if fp16 else trial.part)
    over_tolerance = not fp16 and staged.stat().st_size > MAX_ROW_BYTES
    if over_tolerance:
        fp16 = True
        staged = save_checkpoint(staged, half(trial.part))
    record = folder / "record.json"
    entry = {"file": str((folder / WEIGHTS).relative_to(manifest.parent)), "sha256": sha256(staged),
             "bytes": staged.stat().st_size, "dtype": "float16" if fp16 else "float32",
             "fp16_probe_change": [trial.change, trial.metric], "over_tolerance": over_tolerance,
             "config": comparable(trial.cfg.to_dict()),
             "world_version": WORLD_VERSION, "train_videos": plan.train_videos, "num_classes": plan.num_actions,
             "steps": plan.epochs[trial.row] * plan.steps_per_epoch,
             "trained_at": json.loads(record.read_text())["commit"] if record.exists() else "unknown (no record)",
             "exported_at": code_commit(), "probes": trial.half_probes if fp16 else trial.full_probes,
             "fingerprint": fingerprint(trial.cfg, trial.halved if fp16 else trial.full, device)}
    try:
        check_sizes({**entries, trial.row: entry}, manifest)
    except UserError:
        staged.unlink()
        raise
    staged.replace(folder / WEIGHTS)
    return entry


def export_weights(plan: Plan, rows: tuple[str, ...], device) -> dict[str, dict]:
    """Export seed 0 of `rows` into the preset's manifest, one row at a time, each reported in a
    line: its probe change in float16 and the precision and size it ships in."""
    if not plan.preset.records:
        raise UserError(f"--export-weights: the {plan.name} preset keeps no records, and weights ship beside them")
    manifest = plan.sources / MANIFEST
    entries = read_manifest(manifest)
    for row in rows:
        trial = HalfPrecisionTrial(plan, row, device)
        entries[row] = export_run(plan, trial, manifest, entries, device)
        write_manifest(manifest, plan.name, entries)
        why = (f" (float32 would be over the {MAX_ROW_BYTES / 1e6:g} MB a row may ship: its shipped probes "
               "are the float16 model's own)") if entries[row]["over_tolerance"] else ""
        print(f"{trial.line()}; shipped in {entries[row]['dtype']}{why}, {entries[row]['bytes'] / 1e6:.2f} MB "
              f"({manifest.parent / entries[row]['file']})", flush=True)
    return entries


def check_shipped(preset_name: str, results_dir: str | Path, world_dir: Path, runs_dir: Path, device) -> list[str]:
    """Every file of the preset's manifest loaded as a notebook loads it, and its fingerprint
    recomputed; the rows checked (a UserError at the first one that fails; none while none ship)."""
    manifest = manifest_path(results_dir, preset_name)
    entries = read_manifest(manifest)
    check_sizes(entries, manifest)
    for row, entry in entries.items():
        cfg, model = load_shipped(preset_name, row, results_dir, world_dir, runs_dir, device)
        now, then = torch.tensor(fingerprint(cfg, model, device)), torch.tensor(entry["fingerprint"])
        if now.shape != then.shape or not torch.allclose(now, then, rtol=1e-3, atol=1e-4):
            raise UserError("its features of the fixed clips differ from the manifest's fingerprint (the "
                            "backbone or test-time view changed since the export)", manifest.parent / entry["file"])
    return list(entries)


def load_shipped(preset_name: str, row: str, results_dir: str | Path, world_dir: Path, runs_dir: Path,
                 device, seed: int = 0):
    """(config, model) from the shipped file of `row`, once its hash, config and world version
    match; a `UserError` naming the file and what does not match otherwise."""
    manifest = manifest_path(results_dir, preset_name)
    entry = read_manifest(manifest).get(row)
    if entry is None:
        raise UserError(f"ships no weights of {row}", manifest)
    path = manifest.parent / entry["file"]
    if not path.exists():
        raise UserError("listed in the manifest but missing", path)
    if sha256(path) != entry["sha256"]:
        raise UserError(f"sha256 differs from {manifest}'s: the file is damaged or was replaced "
                        "(git checkout restores it)", path)
    if entry["world_version"] != WORLD_VERSION:
        raise UserError(f"trained on toy world version {entry['world_version']}, this code renders version "
                        f"{WORLD_VERSION}", path)
    cfg = preset_run_config(PRESETS[preset_name], row, seed, world_dir, runs_dir, entry["train_videos"])
    today = comparable(cfg.to_dict())
    try:  # through the config classes, so that knobs added since the export read as what it ran
        then = comparable(saved_run_config(entry["config"]).to_dict())
    except ConfigError as err:
        raise UserError(f"its config no longer reads ({err})", path) from None
    if then != today:
        raise UserError(f"trained with another config than configs/toy/{row}.yaml and the {preset_name} "
                        f"preset give today (it differs in {', '.join(differing_keys(then, today))})", path)
    return cfg, model_from_part(cfg, load_checkpoint(path), entry["num_classes"], device, path)
