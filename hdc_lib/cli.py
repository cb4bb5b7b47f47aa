"""The `hdc` command (also `python -m hdc_lib`). The data and bench subcommands live next to the
code they run; pretrain, eval and reproduce, which draw on several modules, are defined here.

    hdc data toyworld --out data/toyworld       render the embedded toy world
    hdc data check ROOT --splits DIR            report unreadable videos before a long run
    hdc pretrain --config FILE [key=value ...]  train a method (torchrun for several GPUs)
    hdc eval {linear,retrieval,finetune,probes} --run DIR   evaluate a pretrained run
    hdc reproduce --preset toy                  the toy-scale reproduction (make demo)
    hdc bench [--quick]                         the pipeline against its limits (results/bench.md)
    hdc bench data [ROOT]                       loader vs bare PyAV decoding speed alone

A mistake in the input (a missing or malformed file, config value, split or checkpoint: a
`UserError`; or a path that cannot be read or written) is printed as one line,
`hdc: <file>:<line>: <reason>`, with exit status 2. Anything else keeps its traceback.
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
                    "train.epochs=5 model.levels=[layer4]. Under torchrun every rank runs this.")
    parser.add_argument("--config", help="YAML config (configs/...); omit for all defaults")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest readable checkpoint in train.out_dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.set_defaults(func=run_pretrain)


def run_pretrain(args) -> int:
    from hdc_lib.experiment import load_config
    from hdc_lib.train import train

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if summary["interrupted"]:
        print(f"stopped by {summary['interrupted']}; resume with --resume "
              f"(checkpoint in {summary['out_dir']})", file=sys.stderr)
        return 130
    print(f"done: {summary['out_dir']}")
    return 0


def add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a pretrained run: linear probe, retrieval, fine-tuning, toy probes",
        description="Evaluate a run folder (its config.yaml and final.pt). Dotted overrides switch "
                    "the dataset, e.g. data.dataset=hmdb51 data.root=... data.split_dir=...")
    parser.add_argument("protocol", choices=("linear", "retrieval", "finetune", "probes"))
    parser.add_argument("--run", required=True, help="the run folder (train.out_dir)")
    parser.add_argument("--checkpoint", help="another checkpoint than <run>/final.pt")
    parser.add_argument("--clips", type=int, default=10, help="uniform clips per test video")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from hdc_lib.evaluate import finetune, linear_probe, load_backbone, retrieval_recall, video_features
    from hdc_lib.probes import toy_probes
    from hdc_lib.runtime import setup

    device = setup().device
    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise UserError("not a run folder (no config.yaml): --run takes a pretraining's train.out_dir",
                        run_dir)
    cfg, backbone, transform, identity = load_backbone(run_dir, args.checkpoint, args.overrides, device)
    if args.protocol == "finetune":
        result = finetune(cfg, run_dir, args.checkpoint, args.epochs, args.lr, args.clips, device,
                          not args.no_progress)
    elif args.protocol == "probes":
        result = toy_probes(cfg, backbone, transform, device, args.clips)
    else:
        train, test = video_features(cfg, backbone, transform, device, identity, args.clips,
                                     run_dir / "features")
        stage = backbone.stage_names[-1]
        x_train, x_test = train["features"][stage], test["features"][stage]
        result = ({"accuracy": linear_probe(x_train, train["labels"], x_test, test["labels"])}
                  if args.protocol == "linear" else
                  retrieval_recall(x_train, train["labels"], x_test, test["labels"]))
    result = {"protocol": args.protocol, "dataset": cfg.data.dataset, "clips": args.clips, **result}
    (run_dir / f"eval_{args.protocol}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


def add_reproduce_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="the toy-scale reproduction: every ablation, seeds, table and figures",
        description="Train and evaluate the methods and ablations on the toy world; write "
                    "results/<preset>_ablation.md and figures/<preset>_*.png.")
    parser.add_argument("--preset", choices=("toy", "full", "smoke"), default="toy",
                        help="toy: make demo's rows (< 25 min); full: every row at the converged budget")
    parser.add_argument("--world", help="toy-world folder (default data/toyworld[_smoke])")
    parser.add_argument("--runs", help="where the runs go (default runs/reproduce/<preset>)")
    parser.add_argument("--results", default="results")
    parser.add_argument("--figures", default="figures")
    parser.add_argument("--jobs", type=int, help="runs trained side by side (default: one per CPU core "
                        "up to 4, each with its share of the threads; 1 on a GPU)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_reproduce)


def run_reproduce(args) -> int:
    from hdc_lib.reproduce import reproduce

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    reproduce(args.preset, args.world, args.runs, args.results, args.figures,
              progress=not args.no_progress, jobs=args.jobs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hdc_lib.bench import add_bench_parser
    from hdc_lib.data.check import add_check_parser
    from hdc_lib.data.toyworld import add_toyworld_parser

    parser = argparse.ArgumentParser(prog="hdc", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="datasets: render the toy world, check a dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    add_toyworld_parser(data_commands)
    add_check_parser(data_commands)
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
