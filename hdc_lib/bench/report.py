"""`hdc bench`'s report: every row run (`run_all`), then results/bench.md and bench.json written
(`write_report`), with the sections that other commands' records feed (precision probes, wall times)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from hdc_lib.bench.augmentation import bench_augment
from hdc_lib.bench.decode import bench_decode
from hdc_lib.provenance import machine_description
from hdc_lib.bench.methods import bench_methods
from hdc_lib.bench.precision import bench_precision
from hdc_lib.bench.precision_probes import precision_probes_table
from hdc_lib.bench.scaling import QUICK_AXES, SCALING_AXES, bench_scaling, scaling_figure
from hdc_lib.bench.stall import bench_stall

HISTORY_MARKER = "<!-- everything below this line is kept when `hdc bench` rewrites the file -->"


def run_all(quick: bool = False, world: str | Path = "data/toyworld") -> dict:
    """Every row; `quick` uses fewer items, repeats and points (a minute instead of a few)."""
    from hdc_lib.data.toyworld import ensure_toyworld
    from hdc_lib.runtime import keep_freed_memory

    keep_freed_memory()  # as training does
    ensure_toyworld(world)
    repeats = 3 if quick else 5
    started = time.perf_counter()
    report = {
        "quick": quick,
        "machine": machine_description("cpu"),
        "decode": bench_decode(num_items=16 if quick else 64, repeats=repeats),
        "augment": bench_augment(repeats=repeats),
        "stall": bench_stall(batches=2 if quick else 6, repeats=2 if quick else 3, world=world),
        "methods": bench_methods(batch=16 if quick else 32, repeats=repeats),
        "scaling": bench_scaling(QUICK_AXES if quick else SCALING_AXES, repeats=2 if quick else 3),
        "precision": bench_precision(batch=32 if quick else 64, repeats=repeats),
    }
    if torch.cuda.is_available():
        report["cuda"] = bench_methods(batch=32, repeats=repeats, device="cuda", channels_last=True)
    report["seconds"] = time.perf_counter() - started
    return report


def _verdict(value: float, goal: float, at_least: bool = True) -> str:
    met = value >= goal if at_least else value <= goal
    return "met" if met else "**not met**"


def _precision_reason(precision: dict) -> str:
    """What `auto` looked at: AMX and the bf16 conv3d check."""
    return (f"AMX {'yes' if precision['amx'] else 'no'}, bf16 conv3d check "
            f"{'passed' if precision['bf16_conv3d_agrees'] else 'failed'}")


def summary_table(report: dict) -> list[str]:
    """The rows with a goal, one line each: what was measured, the ratio, the goal, met or not."""
    d, a, pr = report["decode"], report["augment"], report["precision"]
    stall_min = min(report["stall"], key=lambda r: r["ratio"])
    worst = max(report["methods"], key=lambda r: r["overhead"])
    slowest = min(pr["rows"], key=lambda r: r["toy_speedup"])
    return [
        "| row | measured | ratio | goal | |",
        "|---|---|---|---|---|",
        f"| 1. decode | loader {d['loader_clips_per_s']:.0f} vs bare PyAV {d['bare_pyav_clips_per_s']:.0f} clips/s "
        f"({d['clips']} clips of {d['clip_frames']} frames, 112 px synthetic H.264; cached loader "
        f"{d['cached_loader_clips_per_s']:.0f} clips/s) | {d['loader_vs_bare']:.2f} | >= 0.8 | "
        f"{_verdict(d['loader_vs_bare'], 0.8)} |",
        f"| 2. augmentation | batched {1000 * a['batched_s']:.1f} ms vs transforms.v2 clip by clip "
        f"{1000 * a['torchvision_s']:.1f} ms (64 clips of 8 x 64x64 -> 32x32) | {a['speedup']:.1f}x | >= 5x | "
        f"{_verdict(a['speedup'], 5)} |",
        f"| 3. data stall | slowest margin: {stall_min['method']}, loader {stall_min['loader_videos_per_s']:.0f} vs "
        f"step {stall_min['step_videos_per_s']:.0f} videos/s | {stall_min['ratio']:.1f}x | >= 1.5x | "
        f"{_verdict(stall_min['ratio'], 1.5)} |",
        f"| 4. method overhead | worst: {worst['method']}, step {1000 * worst['method_s']:.0f} ms vs its bare "
        f"backbone passes {1000 * worst['bare_s']:.0f} ms | {worst['overhead']:.2f}x | <= 1.3x | "
        f"{_verdict(worst['overhead'], 1.3, at_least=False)} |",
        f"| 5. precision | auto = {pr['precision']} ({_precision_reason(pr)}); slowest gain: {slowest['method']}, "
        f"toy step fp32 {1000 * slowest['toy_fp32_s']:.0f} ms vs {pr['precision']} {1000 * slowest['toy_low_s']:.0f} ms | "
        f"{slowest['toy_speedup']:.2f}x | >= 1.5x | {_verdict(slowest['toy_speedup'], 1.5)} |",
    ]


def stall_section(rows: list[dict]) -> list[str]:
    return [
        "## 3. Data stall, per method (toy preset: batch 64, workers as configured)",
        "",
        "| method | workers | loader videos/s | step videos/s | loader / step |",
        "|---|---|---|---|---|",
        *[f"| {r['method']} | {r['workers']} | {r['loader_videos_per_s']:.0f} | {r['step_videos_per_s']:.0f} | "
          f"{r['ratio']:.1f}x |" for r in rows],
        "",
    ]


def methods_section(rows: list[dict]) -> list[str]:
    return [
        f"## 4. Method step vs the bare backbone passes it makes; peak memory ({rows[0]['precision']})",
        "",
        "The bare reference replays the method's backbone passes (same clips, same depth, gradient "
        "where the method has it) with a plain mean as the loss; the difference is the heads, "
        "losses, re-weighting, maps and view bookkeeping. Views per video are inherent cost.",
        "",
        "| method | views/video | backbone clips/video | backbone passes | clips (with grad) | step ms | "
        "bare ms | overhead | backbone GFLOP/s | peak MB | bare peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['method']} | {r['views_per_video']} | {r['clips'] / r['batch']:.0f} | {r['backbone_passes']} | {r['clips']} "
          f"({r['grad_clips']}) | {1000 * r['method_s']:.0f} | {1000 * r['bare_s']:.0f} | {r['overhead']:.2f}x | "
          f"{1000 * r['bare_tflops']:.1f} | {r['peak_mb']:.0f} | {r['bare_peak_mb']:.0f} |"
          for r in rows],
        "",
    ]


def precision_section(precision: dict, results_dir: Path) -> list[str]:
    chosen = precision["precision"]
    return [
        f"## 5. Precision: each method's step in fp32 and in {chosen} (toy preset, batch "
        f"{precision['rows'][0]['batch']})",
        "",
        f"`train.precision=auto` chose {chosen} ({_precision_reason(precision)}). Two copies of each method "
        "from the same initial weights, timed interleaved on one thread in CPU time (other jobs on the machine "
        "do not enter it). Model step: forward, backward and update on fixed views (what "
        "the precision changes); toy step: the views made from uint8 windows (fp32 augmentation), then the "
        "model step.",
        "",
        f"| method | model step fp32 ms | model step {chosen} ms | ratio | toy step fp32 ms | "
        f"toy step {chosen} ms | ratio |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['method']} | {1000 * r['model_fp32_s']:.0f} | {1000 * r['model_low_s']:.0f} | {r['model_speedup']:.2f}x | "
          f"{1000 * r['toy_fp32_s']:.0f} | {1000 * r['toy_low_s']:.0f} | {r['toy_speedup']:.2f}x |"
          for r in precision["rows"]],
        "",
        *precision_probes_section(results_dir),
    ]


def scaling_section(scaling: dict) -> list[str]:
    return [
        "## 6. Scaling (HDC step, toy preset)",
        "",
        "![scaling](../figures/bench_scaling.png)",
        "",
        *[f"- {axis}: " + ", ".join(f"{v} -> {1000 * s:.0f} ms" for v, s in points) for axis, points in scaling.items()],
        "",
    ]


def cuda_section(rows: list[dict] | None) -> list[str]:
    if rows is None:
        return ["## 7. CUDA", "", "Skipped: no CUDA device on this machine.", ""]
    return ["## 7. CUDA", "", "| method | step ms | bare ms | overhead | backbone TFLOP/s | peak MB |",
            "|---|---|---|---|---|---|",
            *[f"| {r['method']} | {1000 * r['method_s']:.1f} | {1000 * r['bare_s']:.1f} | {r['overhead']:.2f}x | "
              f"{r['bare_tflops']:.2f} | {r['peak_mb']:.0f} |" for r in rows], ""]


def format_report(report: dict, command: str, results_dir: Path = Path("results")) -> str:
    """results/bench.md's generated part: the summary table, then each row's section in order."""
    lines = [
        "# `hdc bench`: the pipeline against its limits",
        "",
        f"Command: `{command}` · {report['machine']} · {report['seconds']:.0f} s in total. "
        "Each ratio compares two things measured in the same process, warm, median of interleaved repeats.",
        "",
        *summary_table(report),
        "",
        *stall_section(report["stall"]),
        *methods_section(report["methods"]),
        *precision_section(report["precision"], Path(results_dir)),
        *scaling_section(report["scaling"]),
        *cuda_section(report.get("cuda")),
        *wall_times_section(Path(results_dir)),
    ]
    return "\n".join(lines) + "\n"


def write_report(report: dict, results_dir: str | Path = "results", figures_dir: str | Path = "figures",
                 command: str = "hdc bench") -> Path:
    """results/bench.md (keeping the hand-written part below HISTORY_MARKER), bench.json, the figure."""
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    scaling_figure(report["scaling"], figures_dir / "bench_scaling.png")
    path = results_dir / "bench.md"
    path.write_text(format_report(report, command, results_dir) + "\n" + HISTORY_MARKER + (kept_history(path) or "\n"))
    (results_dir / "bench.json").write_text(json.dumps(report, indent=1))
    return path


def kept_history(path: Path) -> str:
    """The hand-written part of an existing report: everything below HISTORY_MARKER ('' if none)."""
    if path.exists() and HISTORY_MARKER in (old := path.read_text()):
        return old.split(HISTORY_MARKER, 1)[1]
    return ""


def precision_probes_section(results_dir: Path) -> list[str]:
    """The fp32-vs-chosen-precision probe table of the last `hdc bench precision-probes` run, if any."""
    path = results_dir / "precision_probes.json"
    if not path.exists():
        return []
    run = json.loads(path.read_text())
    return [f"Toy-world probes of `{run['preset']}` after {run['epochs']} epochs, seeds {run['seeds']}, trained "
            f"and probed in each precision (`{run['command']}`, commit {run['commit']}, {run['seconds'] / 60:.0f} min):",
            "", *precision_probes_table(run), ""]


def wall_times_section(results_dir: Path) -> list[str]:
    """The toy reproduction's and the notebooks' measured times, from the records their runs wrote."""
    lines = ["## Wall times (from the runs that produced them)", ""]
    ablation = results_dir / "toy_ablation.json"
    if ablation.exists():
        run = json.loads(ablation.read_text())
        steps = "/".join(str(s) for s in sorted(set(run["steps"].values())))
        training = sum(sum(seconds) for seconds in run["train_seconds"].values())
        lines.append(f"- `make demo` (`hdc reproduce --preset toy`, commit {run['commit']}, {steps} steps x "
                     f"{len(run['seeds'])} seed(s)): its {run['runs']} runs trained for {training / 60:.1f} min "
                     f"in all, {run['jobs'][0]} at a time; the call that wrote the record took "
                     f"{run['seconds'] / 60:.1f} min and trained {run['trained_here']} of them")
    notebooks = results_dir / "notebook_times.json"
    if notebooks.exists():
        run = json.loads(notebooks.read_text())
        machine = (f", {run['machine']}, load average {run['load_before']} before the first"
                   if "machine" in run else "")
        lines.append(f"- notebooks in their default mode (`{run['command']}`, commit {run['commit']}{machine}):")
        lines += [f"  - {name}: {seconds:.0f} s" for name, seconds in run["seconds"].items()]
    return lines + [""] if len(lines) > 2 else []
