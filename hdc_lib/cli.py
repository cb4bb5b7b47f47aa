"""The `hdc` command (also `python -m hdc_lib`): render and check data, pretrain, evaluate,
reproduce the toy-scale results, benchmark.

The data and bench subcommands live next to the code they run; pretrain, eval, reproduce and
the config-aware part of `data check`, which draw on several modules, are defined here.

    hdc data toyworld --out data/toyworld       render the embedded toy world
    hdc data check ROOT --splits DIR [--config FILE]   report unreadable and too-short videos
    hdc pretrain --config FILE [key=value ...]  train a method (torchrun for several GPUs)
    hdc eval {linear,retrieval,finetune,probes} --run DIR   evaluate a pretrained run
    hdc reproduce --preset toy                  the toy-scale reproduction (make demo)
    hdc bench [--quick]                         the pipeline against its limits (results/bench.md)
    hdc bench data [ROOT]                       loader vs bare PyAV decoding speed alone

A mistake in the input (a missing or malformed file, config value, split or checkpoint: a
`UserError`; or a path that cannot be read or written) is printed as one line,
`hdc: <file>:<line>: <reason>`, with exit status 2. Anything else keeps its traceback.

Progress: `--no-progress` removes the progress bars (which are drawn on a terminal only anyway);
the plain lines, one per epoch and one every train.log_every steps, stay, for cluster logs.
`--quiet` (pretrain) removes those lines too; `hdc reproduce --no-progress` trains quietly.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hdc_lib.errors import UserError


def add_pretrain_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a method from a YAML config",
        description="Pretrain a method. Overrides are dotted key=value pairs, e.g. "
                    "train.epochs=5 model.levels=[layer4]; train.max_steps=N stops a smoke run "
                    "after N steps. Under torchrun every rank runs this. Ctrl-C (or SIGTERM) "
                    "checkpoints at the next step and stops; a second Ctrl-C stops at once.")
    parser.add_argument("--config", help="YAML config (configs/...); omit for all defaults")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest readable checkpoint in train.out_dir (more "
                             "train.epochs extend a step or constant schedule)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in train.out_dir (without it, a new run "
                             "refuses a folder that holds checkpoints)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (drawn on a terminal only); the plain lines stay")
    parser.add_argument("--quiet", action="store_true",
                        help="no plain progress lines either (one per epoch, one every "
                             "train.log_every steps)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.set_defaults(func=run_pretrain)


def run_pretrain(args) -> int:
    from hdc_lib.experiment import load_config
    from hdc_lib.train import train

    cfg = load_config(args.config, args.overrides)
    try:
        summary = train(cfg, resume=args.resume, progress=not args.no_progress, quiet=args.quiet,
                        overwrite=args.overwrite)
    except KeyboardInterrupt:  # a second Ctrl-C
        print(f"stopped at once; the last checkpoint in {cfg.train.out_dir} is kept (continue with "
              "--resume)", file=sys.stderr)
        return 130
    if summary["interrupted"]:
        print(f"stopped by {summary['interrupted']}; resume with --resume "
              f"(checkpoint in {summary['out_dir']})", file=sys.stderr)
        return 130
    if summary["is_main"]:
        print(f"already finished: {summary['out_dir']} (nothing trained)" if summary["finished_before"] else
              f"done (train.max_steps={cfg.train.max_steps} reached): {summary['out_dir']}"
              if summary["stopped_at_max_steps"] else f"done: {summary['out_dir']}")
    return 0


def add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a pretrained run: linear probe, retrieval, fine-tuning, toy probes",
        description="Evaluate a run folder (its config.yaml and final.pt). Dotted overrides switch "
                    "the dataset, e.g. data.dataset=hmdb51 data.root=... data.split_dir=..., and "
                    "for finetune also set the fine-tuning run's optim.*, train.* and model.* keys; "
                    "an override the protocol would not read is an error. Results go to "
                    "<run>/eval_<protocol>[_<dataset>][_<checkpoint>].json, which records both.")
    parser.add_argument("protocol", choices=("linear", "retrieval", "finetune", "probes"))
    parser.add_argument("--run", required=True, help="the run folder (train.out_dir)")
    parser.add_argument("--checkpoint", help="another checkpoint than <run>/final.pt")
    parser.add_argument("--clips", type=int, default=10, help="uniform clips per test video")
    parser.add_argument("--recipe", help="fine-tuning recipe, e.g. configs/finetune/standard.yaml (the "
                        "standard protocol: SGD, lr 0.1 x0.1 at epochs 6 and 8, 10 epochs, batch 64; "
                        "docs/methods.md); default: AdamW at lr 0.01, cosine, 10 epochs, the "
                        "pretraining's batch size")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (same as train.epochs=N)")
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate (same as optim.lr=X)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (drawn on a terminal only); the plain lines stay")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from hdc_lib.evaluate import (evaluated_on, finetune, finetune_config, linear_probe, load_backbone,
                                  result_name, retrieval_recall, split_overrides, video_features)
    from hdc_lib.probes import toy_probes
    from hdc_lib.runtime import setup

    device = setup().device
    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise UserError("not a run folder (no config.yaml): --run takes a pretraining's train.out_dir",
                        run_dir)
    shortcuts = [*([] if args.epochs is None else [f"train.epochs={args.epochs}"]),
                 *([] if args.lr is None else [f"optim.lr={args.lr}"])]
    if (shortcuts or args.recipe) and args.protocol != "finetune":
        raise UserError(f"--recipe, --epochs and --lr configure fine-tuning, which `hdc eval {args.protocol}` does not do")
    for_run, for_finetuning = split_overrides(args.protocol, [*shortcuts, *args.overrides])
    cfg, backbone, transform, identity = load_backbone(run_dir, args.checkpoint, for_run, device)
    name = result_name(run_dir, cfg, args.checkpoint)
    if args.protocol == "finetune":
        recipe = f"_{Path(args.recipe).stem}" if args.recipe else ""  # runs of other recipes kept apart
        ft_cfg = finetune_config(cfg, run_dir, args.checkpoint, args.recipe, for_finetuning,
                                 out_dir=run_dir / f"finetune{name}{recipe}")
        result = finetune(ft_cfg, args.clips, device, not args.no_progress)
    elif args.protocol == "probes":
        result = toy_probes(cfg, backbone, transform, device, args.clips)
    else:
        train, test = video_features(cfg, backbone, transform, device, identity, args.clips,
                                     run_dir / "features", progress=not args.no_progress)
        stage = backbone.stage_names[-1]
        x_train, x_test = train["features"][stage], test["features"][stage]
        result = ({"accuracy": linear_probe(x_train, train["labels"], x_test, test["labels"])}
                  if args.protocol == "linear" else
                  retrieval_recall(x_train, train["labels"], x_test, test["labels"]))
    result = {"protocol": args.protocol, "dataset": cfg.data.dataset, "clips": args.clips,
              **evaluated_on(cfg, identity), **result}
    (run_dir / f"eval_{args.protocol}{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


# hdc_lib.reproduce.PRESETS' names (kept here so that `hdc --help` imports no torch; a test checks them)
PRESET_NAMES = ("toy", "toy_reference", "full", "readings", "convergence", "smoke")


def add_reproduce_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="the toy-scale reproduction: every ablation, seeds, table and figures",
        description="Train and evaluate the methods and ablations on the toy world; write "
                    "results/<preset>_ablation.md and figures/<preset>_*.png.")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="toy",
                        help="toy: make demo's rows (19 min on 2 cores); toy_reference: the same over 3 seeds, "
                        "recorded; full: every row, 3 seeds, 1800 steps, recorded; readings: HDC's "
                        "dropped readings at seed 0, recorded; convergence: the best row and its "
                        "control at 3600 steps, seed 0, recorded; smoke: a minute-scale check")
    parser.add_argument("--world", help="toy-world folder (default data/toyworld[_smoke])")
    parser.add_argument("--runs", help="where the runs go (default runs/reproduce/<preset>)")
    parser.add_argument("--results", default="results")
    parser.add_argument("--figures", default="figures")
    parser.add_argument("--jobs", type=int, help="runs trained side by side (default: one per CPU core "
                        "up to 4, each with its share of the threads; 1 on a GPU)")
    parser.add_argument("--rows", help="only these rows (comma-separated): train the missing runs, "
                        "print their probes, write no table")
    parser.add_argument("--seeds", help="only these seeds (comma-separated), likewise")
    parser.add_argument("--no-progress", action="store_true", help="no line per epoch while training")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--export-weights", action="store_true",
                         help="write the shipped weights of the finished seed-0 runs (of --rows) beside "
                         "their records, with the manifest; report each one's probe change in float16")
    weights.add_argument("--measure-fp16", action="store_true",
                         help="only measure, for the finished seed-0 runs (of --rows), the largest probe "
                         "change that rounding their shipped part to float16 causes")
    weights.add_argument("--check-weights", action="store_true",
                         help="load every shipped file as a notebook would and check its hash, config, "
                         "world version and fingerprint")
    parser.set_defaults(func=run_reproduce)


def comma_list(text: str | None, option: str, kind=str) -> tuple | None:
    """`a,b` as a tuple of `kind`; None when the option is not given."""
    if text is None:
        return None
    try:
        return tuple(kind(item) for item in text.split(",") if item)
    except ValueError:
        raise UserError(f"{option} takes a comma-separated list of {kind.__name__}s, got {text!r}") from None


def run_reproduce(args) -> int:
    from hdc_lib.reproduce import default_dirs, plan_runs, reproduce
    from hdc_lib.runtime import setup
    from hdc_lib.shipped_weights import (HalfPrecisionTrial, check_shipped, export_weights, manifest_path,
                                         read_manifest, write_manifest_page)

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    rows, seeds = comma_list(args.rows, "--rows"), comma_list(args.seeds, "--seeds", int)
    if args.check_weights:
        world, runs = default_dirs(args.preset, args.world, args.runs)
        checked = check_shipped(args.preset, args.results, world, runs, setup().device)
        manifest = manifest_path(args.results, args.preset)
        if checked:  # the page beside the manifest, as the manifest says today
            write_manifest_page(manifest, args.preset, read_manifest(manifest))
        print(f"{len(checked)} shipped weight files of the {args.preset} preset load and match their manifest"
              + (f": {', '.join(checked)}" if checked else ""))
    elif args.export_weights or args.measure_fp16:
        plan = plan_runs(args.preset, args.world, args.runs, args.results, rows, (0,))
        rows = tuple(task["row"] for task in plan.tasks)
        if args.export_weights:
            export_weights(plan, rows, setup().device)
        for row in rows if args.measure_fp16 else ():
            print(HalfPrecisionTrial(plan, row, setup().device).line(), flush=True)
    else:
        reproduce(args.preset, args.world, args.runs, args.results, args.figures,
                  progress=not args.no_progress, jobs=args.jobs, rows=rows, seeds=seeds)
    return 0


def run_data_check(args) -> int:
    """`hdc data check`, with --min-frames taken from --config's training items when not given."""
    from hdc_lib.data.check import frames_needed, run_check
    from hdc_lib.experiment import build_method, load_config

    if args.config is not None and args.min_frames is None:
        cfg = load_config(args.config)
        args.min_frames = frames_needed(build_method(cfg, num_classes=1).clip_request())
        print(f"{args.config}: a training item needs {args.min_frames} frames per video")
    return run_check(args)


def build_parser() -> argparse.ArgumentParser:
    from hdc_lib.bench import add_bench_parser
    from hdc_lib.data.check import add_check_parser
    from hdc_lib.data.toyworld import add_toyworld_parser

    parser = argparse.ArgumentParser(prog="hdc", description=" ".join(__doc__.split("\n\n")[0].split()))
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="datasets: render the toy world, check a dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    add_toyworld_parser(data_commands)
    add_check_parser(data_commands).set_defaults(func=run_data_check)
    add_pretrain_parser(commands)
    add_eval_parser(commands)
    add_reproduce_parser(commands)
    add_bench_parser(commands)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as `hdc` reads it (exits with a usage error on an unknown argument)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives a trailing `key=value` list nothing once an option has come between it and
    # the other positionals (`hdc eval linear --run DIR data.dataset=hmdb51`): take them here.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return args.func(args)
    except OSError as err:  # a path that cannot be read or written (no such folder, no permission)
        if err.filename is None or err.strerror is None:
            raise
        return report(UserError(err.strerror, err.filename))
    except UserError as err:
        return report(err)


def report(err: UserError) -> int:
    """The input's fault: one line the user can act on (no traceback), exit status 2."""
    print("hdc: " + " ".join(str(err).splitlines()), file=sys.stderr)
    return 2


if __name__ == "__main__":  # `python -m hdc_lib.cli ...` behaves like the `hdc` script
    sys.exit(main())
