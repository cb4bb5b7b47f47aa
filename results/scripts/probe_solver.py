"""The library's probe solver against scikit-learn's LogisticRegressionCV on the same features:
CPU time and accuracy, written to results/probe_solver.md.

The library's linear probe (`hdc_lib.evaluate.fit_probes`) fits every cross-validation fold, L2
strength, feature level and fit set as one row of a batched L-BFGS. Here it and scikit-learn fit
the same probes on the same video features of the default toy world, as `hdc_lib.probes` builds
them, at the three levels it reads (layer2-4):
- action_biased: fitted on the 1200 train videos (scene-biased), scored on the 400 test videos;
- scene: cross-fitted on class-stratified halves of the test split (two fit sets).
Backbones: the tiny 3D ResNet at random init (seed 0) and after one epoch of the coupled baseline
(37 steps of 32 videos, as notebook 01 trains it), trained here into runs/probe_solver/ (a
finished run there is trained again).

scikit-learn, as close to the library's protocol as LogisticRegressionCV allows: features
standardised with the fit set's mean and std (the library standardises each fold's training part
on its own), the library's stratified 5 folds as `cv`, its strength grid as Cs = 1/lambda with
sample weights 1/n (so the refit minimises the same mean cross-entropy + lambda/2 ||W||^2; the CV
fits, on 4/5 of the items, then see 1.25 lambda), lbfgs, tol 1e-4 (both stop at max |gradient| <=
1e-4), max_iter 1000, ties to the strongest lambda. Both solvers in float64 on one thread, timed
in CPU time (time.process_time; other jobs on the machine do not enter it), interleaved, median
of the repeats.

    python results/scripts/probe_solver.py [--world data/toyworld] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.linear_model import LogisticRegressionCV
from threadpoolctl import threadpool_limits

from hdc_lib.data.toyworld import ensure_toyworld, load_manifest
from hdc_lib.evaluate import CV_FOLDS, L2_STRENGTHS, fit_probes, stratified_folds
from hdc_lib.experiment import build_method, load_config
from hdc_lib.features import eval_datasets, eval_transform, extract_features
from hdc_lib.probes import probe_stages, relative_path
from hdc_lib.train import train
from hdc_lib.viz import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def backbones(world: Path, world_args: dict, out_dir: Path, batch: int = 32) -> dict:
    """{name: (cfg, method)}: random init and one epoch of the coupled baseline."""
    overrides = [f"data.root={world}", f"data.toyworld={json.dumps(world_args)}", "train.epochs=1", f"train.batch_size={batch}", "train.seed=0", "train.knn_every=0",
                 f"train.out_dir={out_dir}"]
    cfg = load_config(ROOT / "configs/toy/coupled.yaml", overrides)
    torch.manual_seed(cfg.train.seed)
    random_init = build_method(cfg, num_classes=8)
    trained = train(cfg, progress=False)["method"]
    steps = read_metrics(out_dir, "step")[-1]["global_step"]
    return {"random init": (cfg, random_init), f"coupled, 1 epoch ({steps} steps of {batch})": (cfg, trained)}


def probe_tasks(cfg, method) -> dict:
    """{probe: (levels [L x (n, D)], labels (n,), fit (S, n) bool, score (S, n) bool)}."""
    train_set, test_set = eval_datasets(cfg, num_clips=4)
    stages = probe_stages(method.backbone)
    transform = eval_transform(method)
    train_f, test_f = (extract_features(method.backbone, ds, transform, "cpu", stages=stages) for ds in (train_set, test_set))
    manifest = {row["path"]: row for row in load_manifest(Path(cfg.data.root))}
    scenes = torch.tensor([manifest[relative_path(test_set, int(i))]["scene_id"] for i in test_f["index"]])
    n_train, n_test = len(train_f["labels"]), len(test_f["labels"])
    on_train = torch.arange(n_train + n_test) < n_train
    halves = stratified_folds(scenes, 2)
    return {
        "action_biased": ([torch.cat([train_f["features"][s], test_f["features"][s]]) for s in stages],
                          torch.cat([train_f["labels"], test_f["labels"]]), on_train[None], ~on_train[None]),
        "scene": ([test_f["features"][s] for s in stages], scenes,
                  torch.stack([halves != 0, halves != 1]), torch.stack([halves == 0, halves == 1])),
    }


def library(levels, labels, fit) -> tuple[torch.Tensor, torch.Tensor]:
    result = fit_probes(levels, labels, fit)
    return result.predictions, result.strength


def scikit_learn(levels, labels, fit) -> tuple[torch.Tensor, torch.Tensor]:
    """LogisticRegressionCV for every fit set and level: predictions (S, L, n), chosen lambda (S, L)."""
    predictions = torch.empty(len(fit), len(levels), len(labels), dtype=torch.long)
    strength = torch.empty(len(fit), len(levels), dtype=torch.float64)
    strongest_first = sorted(L2_STRENGTHS, reverse=True)
    for s, members in enumerate(fit.numpy()):
        y = labels.numpy()[members]
        k = min(CV_FOLDS, len(y))  # as fit_probes
        inner = stratified_folds(torch.from_numpy(y), k).numpy()
        folds = [(np.flatnonzero(inner != j), np.flatnonzero(inner == j)) for j in range(k)]
        for l, features in enumerate(levels):
            x = features.double().numpy()
            mean, std = x[members].mean(0), x[members].std(0).clip(min=1e-6)
            model = LogisticRegressionCV(Cs=[1 / lam for lam in strongest_first], cv=folds, solver="lbfgs",
                                         tol=1e-4, max_iter=1000, scoring="accuracy",
                                         l1_ratios=(0.0,), use_legacy_attributes=False)
            model.fit((x[members] - mean) / std, y, sample_weight=np.full(len(y), 1 / len(y)))
            predictions[s, l] = torch.from_numpy(model.predict((x - mean) / std))
            strength[s, l] = 1 / model.C_
    return predictions, strength


def accuracy(predictions, labels, score) -> list[float]:
    """Per level: share of the scored items predicted right, pooled over the fit sets."""
    correct = (predictions == labels) & score[:, None]
    return (correct.sum((0, 2)).double() / score.sum()).tolist()


def measure(tasks: dict, repeats: int) -> list[dict]:
    rows = []
    solvers = {"library (batched L-BFGS)": library, "scikit-learn LogisticRegressionCV": scikit_learn}
    for probe, (levels, labels, fit, score) in tasks.items():
        seconds = {name: [] for name in solvers}
        for _ in range(repeats):
            for name, solve in solvers.items():
                started = time.process_time()
                outcome = solve(levels, labels, fit)
                seconds[name].append(time.process_time() - started)
                if name == next(iter(solvers)):
                    ours = outcome
                else:
                    theirs = outcome
        rows.append({"probe": probe, "fits": len(fit) * len(levels), "items": int(fit.sum(1).max()),
                     "dims": [f.shape[1] for f in levels],
                     "seconds": {name: statistics.median(s) for name, s in seconds.items()},
                     "accuracy": {name: accuracy(p, labels, score) for name, (p, _) in
                                  zip(solvers, (ours, theirs))},
                     "same_prediction": (ours[0] == theirs[0]).double().mean().item(),
                     "same_strength": (ours[1] == theirs[1]).double().mean().item(),
                     "strengths": {name: s.flatten().tolist() for name, (_, s) in zip(solvers, (ours, theirs))}})
    return rows


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def report(results: dict) -> str:
    lines = ["# Probe solver: the library's batched L-BFGS against scikit-learn's LogisticRegressionCV", "",
             f"Command: `{results['command']}` · commit `{results['commit']}` · {results['cpu']}, 1 thread, "
             f"torch {results['torch']}, scikit-learn {results['sklearn']} · features from fp32 backbones, both solvers "
             f"in float64 · {results['wall_s'] / 60:.1f} min wall in all (features and the 1-epoch run included).", "",
             "Same features, fit sets, folds and strength grid (results/scripts/probe_solver.py says what differs: "
             "scikit-learn standardises once per fit set and its CV fits see 1.25 lambda). CPU seconds per probe "
             "(every fit set x 3 levels; median of "
             f"{results['repeats']} interleaved repeats); accuracy at layer2 / layer3 / layer4.", "",
             "| backbone | probe | fits x items | library s | scikit-learn s | scikit-learn / library | library accuracy | "
             "scikit-learn accuracy | same prediction | same lambda |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for backbone, rows in results["backbones"].items():
        for r in rows:
            ours, theirs = r["seconds"].values()
            acc = [" / ".join(f"{a:.3f}" for a in r["accuracy"][name]) for name in r["accuracy"]]
            lines.append(f"| {backbone} | {r['probe']} | {r['fits']} x {r['items']} | {ours:.2f} | {theirs:.2f} | "
                         f"{theirs / ours:.1f}x | {acc[0]} | {acc[1]} | {r['same_prediction']:.3f} | "
                         f"{r['same_strength']:.2f} |")
    total = {name: sum(r["seconds"][name] for rows in results["backbones"].values() for r in rows)
             for name in next(iter(results["backbones"].values()))[0]["seconds"]}
    ours, theirs = total.values()
    rows = [r for rows in results["backbones"].values() for r in rows]
    fits = sum(r["fits"] for r in rows)
    other_strength = round(sum(r["fits"] * (1 - r["same_strength"]) for r in rows))
    lines += ["", f"In all: library {ours:.1f} s, scikit-learn {theirs:.1f} s of CPU ({theirs / ours:.1f}x).", "",
              f"Kept: the library's solver. scikit-learn {'is faster here' if theirs < ours else 'is not faster'}, "
              f"but it chose another strength in {other_strength} of {fits} fits and another class in up to "
              f"{100 * (1 - min(r['same_prediction'] for r in rows)):.1f}% of the predictions, so swapping it in would "
              "change the committed probe numbers, which this measurement may not (hdc_lib/evaluate.py's docstring)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(ROOT / "data/toyworld"))
    parser.add_argument("--world-args", default="{}", help="toy-world arguments (JSON; default: the default world)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="the 1-epoch run's batch size")
    parser.add_argument("--run", default=str(ROOT / "runs/probe_solver/coupled_1epoch"), help="where the 1-epoch run goes")
    parser.add_argument("--out", default=str(ROOT / "results/probe_solver.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    world, world_args = Path(args.world), json.loads(args.world_args)
    ensure_toyworld(world, progress=False, **world_args)
    results = {"command": "python results/scripts/probe_solver.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else ""),
               "commit": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                        cwd=ROOT).stdout.strip(),
               "cpu": cpu_name(), "torch": torch.__version__, "sklearn": sklearn.__version__,
               "repeats": args.repeats, "backbones": {}}
    with threadpool_limits(1):
        for name, (cfg, method) in backbones(world, world_args, Path(args.run), args.batch).items():
            results["backbones"][name] = measure(probe_tasks(cfg, method), args.repeats)
            print(name, json.dumps(results["backbones"][name], indent=1))
    results["wall_s"] = time.perf_counter() - started
    Path(args.out).write_text(report(results))
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(report(results))


if __name__ == "__main__":
    main()
