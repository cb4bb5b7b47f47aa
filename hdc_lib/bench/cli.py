"""`hdc bench [--quick]`: the training pipeline measured against its limits, as ratios.

The command line of `hdc bench` and its subcommands (`data`, `notebooks`, `precision-probes`, and
`--device` for the paper presets); each runs its rows and writes its results.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from hdc_lib.bench.decode import bench_decode
from hdc_lib.bench.notebooks import time_notebooks
from hdc_lib.bench.precision_probes import precision_probes, precision_probes_table
from hdc_lib.bench.presets import PAPER_PRESETS, bench_presets, format_presets
from hdc_lib.bench.report import format_report, run_all, write_report
from hdc_lib.provenance import code_commit, device_description, machine_description


def add_bench_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: the pipeline against its limits",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and points (about a minute)")
    parser.add_argument("--world", default="data/toyworld", help="toy-world folder")
    parser.add_argument("--results", default="results")
    parser.add_argument("--figures", default="figures")
    parser.add_argument("--device", help="instead of the toy rows: train each paper preset on this device "
                                         "(cuda, cuda:N, cpu) and report clips/s, memory, TFLOP/s, loader margin")
    parser.add_argument("--steps", type=int, default=300, help="--device: timed training steps per preset")
    parser.add_argument("--batch", type=int, help="--device: batch per step (default: the preset's train.batch_size)")
    parser.add_argument("--presets", nargs="+", default=[str(p) for p in PAPER_PRESETS],
                        help="--device: preset files (default: configs/ucf101/* and configs/kinetics400/*)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="--device: a config override for every preset, e.g. --set data.root=/data/UCF101/videos")
    parser.set_defaults(func=run_bench)
    rows = parser.add_subparsers(dest="bench_command")
    data = rows.add_parser(
        "data", help="row 1 alone: the dataset loader vs a bare PyAV loop",
        description="Clips/s of the dataset loader vs a bare PyAV loop over the same windows.")
    data.add_argument("root", nargs="?", default=None,
                      help="video root (default: synthetic videos in a temporary directory)")
    data.add_argument("--splits", default=None, help="split-file directory")
    data.add_argument("--format", choices=("ucf101", "hmdb51", "folder"), default="folder")
    data.add_argument("--fold", type=int, default=1)
    data.add_argument("--items", type=int, default=64, help="dataset items to decode")
    data.add_argument("--clip-frames", type=int, default=16)
    data.set_defaults(func=run_bench_data)
    notebooks = rows.add_parser(
        "notebooks", help="time every notebook in its default mode (results/notebook_times.json)",
        description="Run notebooks top to bottom in their default mode and record the seconds each takes.")
    notebooks.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    notebooks.add_argument("--inplace", action="store_true", help="store the fresh outputs in the notebooks")
    notebooks.set_defaults(func=run_bench_notebooks)
    probes = rows.add_parser(
        "precision-probes", help="fp32 vs the chosen precision: train a toy preset for a few seeds in each, "
                                 "probe every run (results/precision_probes.json)",
        description="Train a toy preset for each seed in fp32 and in train.precision=auto's choice, run the "
                    "toy-world probes on every run, and compare the two precisions against the seeds' spread.")
    probes.add_argument("--preset", default="hdc", help="a configs/toy preset name")
    probes.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    probes.add_argument("--epochs", type=int, default=10)
    probes.add_argument("--clips", type=int, default=4, help="uniform clips per video for the probes")
    probes.add_argument("--world", default="data/toyworld", help="toy-world folder")
    probes.add_argument("--out", default="runs/precision", help="where the runs go")
    probes.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a config override for every run")
    probes.set_defaults(func=run_bench_precision_probes)


def run_bench(args) -> int:
    if args.device:
        return run_bench_presets(args)
    report = run_all(args.quick, args.world)
    command = "hdc bench" + (" --quick" if args.quick else "")
    path = write_report(report, args.results, args.figures, command)
    print(format_report(report, command))
    print(f"written: {path}")
    return 0


def run_bench_presets(args) -> int:
    from hdc_lib.runtime import keep_freed_memory

    keep_freed_memory()  # as training does
    overrides = tuple(args.overrides) + ((f"train.batch_size={args.batch}",) if args.batch else ())
    rows = bench_presets(args.device, args.steps, args.presets, overrides)
    device = torch.device(args.device)
    command = f"hdc bench --device {args.device} --steps {args.steps}" + (f" --batch {args.batch}" if args.batch else "")
    text = format_presets(rows, command, f"{device_description(device)}, torch {torch.__version__}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"bench_{device.type}.md"
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)
    print(f"written: {path}")
    return 0


def run_bench_precision_probes(args) -> int:
    result = precision_probes(args.preset, tuple(args.seeds), args.epochs, args.world, args.out, args.clips,
                              overrides=tuple(args.overrides))
    result["command"] = (f"hdc bench precision-probes --preset {args.preset} --seeds {' '.join(map(str, args.seeds))} "
                         f"--epochs {args.epochs}" + "".join(f" --set {o}" for o in args.overrides))
    result["commit"] = code_commit()
    Path(args.results).mkdir(parents=True, exist_ok=True)
    (Path(args.results) / "precision_probes.json").write_text(json.dumps(result, indent=1))
    print("\n".join(precision_probes_table(result)))
    return 0


def run_bench_data(args) -> int:
    d = bench_decode(args.root, args.splits, args.format, args.fold, num_items=args.items,
                     clip_frames=args.clip_frames)
    print(f"{d['clips']} clips of {d['clip_frames']} frames\n"
          f"bare PyAV      {d['bare_pyav_clips_per_s']:9.1f} clips/s\n"
          f"loader         {d['loader_clips_per_s']:9.1f} clips/s  ({d['loader_vs_bare']:.2f} x bare PyAV; goal >= 0.8)\n"
          f"cached loader  {d['cached_loader_clips_per_s']:9.1f} clips/s")
    return 0


def run_bench_notebooks(args) -> int:
    paths = [Path(p) for p in args.paths] or sorted(Path("notebooks").glob("*.ipynb"))
    # what else ran meanwhile (a training run beside the notebooks slows them): the 1-minute load
    # average before the first notebook, beside the machine
    load = os.getloadavg()[0]
    seconds = time_notebooks(paths, inplace=args.inplace)
    for name, value in seconds.items():
        print(f"{name:40s} {value:6.0f} s")
    if not args.paths:  # the full set: record it for results/bench.md and the README
        command = "hdc bench notebooks" + (" --inplace" if args.inplace else "")
        record = {"command": command, "commit": code_commit(), "machine": machine_description("cpu"),
                  "load_before": round(load, 2), "seconds": seconds}
        Path(args.results).mkdir(parents=True, exist_ok=True)
        (Path(args.results) / "notebook_times.json").write_text(json.dumps(record, indent=1))
    return 0
