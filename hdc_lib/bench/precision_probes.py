"""`hdc bench precision-probes`: a toy preset trained for a few seeds in fp32 and in the chosen
precision, every run probed: do the two precisions agree within the spread over seeds?"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from hdc_lib.bench.steps import CONFIGS
from hdc_lib.experiment import load_config
from hdc_lib.precision import resolve_precision


def precision_probes(preset: str = "hdc", seeds: tuple[int, ...] = (0, 1, 2), epochs: int = 10,
                     world: str | Path = "data/toyworld", out_dir: str | Path = "runs/precision",
                     num_clips: int = 4, precision: str = "auto", overrides: tuple[str, ...] = ()) -> dict:
    """Train the toy preset `preset` for each seed in fp32 and in `precision` (auto: what training
    picks on this CPU), then probe every run with the toy-world probes of `hdc eval probes` (in the
    run's own precision): do the two precisions agree within the spread over seeds? A seed fixes
    the initial weights and the data order, so both precisions of a seed start alike. `overrides`
    apply to every run (e.g. a smaller world's data.toyworld)."""
    from hdc_lib.features import eval_transform
    from hdc_lib.probes import toy_probes
    from hdc_lib.train import train

    chosen = resolve_precision(precision, "cpu")
    started, runs = time.perf_counter(), []
    for seed in seeds:
        for compute in dict.fromkeys(("fp32", chosen)):
            cfg = load_config(CONFIGS / f"{preset}.yaml", [
                f"data.root={world}", f"train.seed={seed}", f"train.precision={compute}", f"train.epochs={epochs}",
                "train.knn_every=0", f"train.out_dir={Path(out_dir) / preset / compute / f'seed{seed}'}",
                *overrides])
            tick = time.perf_counter()
            method = train(cfg, progress=False)["method"]
            train_s = time.perf_counter() - tick
            probes = toy_probes(cfg, method.backbone, eval_transform(method), next(method.parameters()).device,
                                num_clips)
            runs.append({"seed": seed, "precision": compute, "train_s": train_s, "probes": probes})
    return {"preset": preset, "epochs": epochs, "seeds": list(seeds), "precision": chosen, "runs": runs,
            "seconds": time.perf_counter() - started}


def precision_probes_table(result: dict) -> list[str]:
    """Markdown: each headline probe's mean and standard deviation over seeds in fp32 and in the
    chosen precision, and whether the difference of the means is within two of its standard errors
    (estimated from the seeds' spread); then the training seconds of each precision."""
    chosen = result["precision"]
    by_precision = {p: [r for r in result["runs"] if r["precision"] == p] for p in ("fp32", chosen)}
    # headline probes: the last stage's ("action_biased", "R@1", ...), not "probe@layerN"
    names = [k for k in by_precision["fp32"][0]["probes"] if not k.partition("@")[2].startswith("layer")]
    lines = [f"| probe | fp32 | {chosen} | difference | within seed noise |", "|---|---|---|---|---|"]
    for name in names:
        values = {p: [r["probes"][name] for r in runs] for p, runs in by_precision.items()}
        mean = {p: statistics.mean(v) for p, v in values.items()}
        sd = {p: statistics.stdev(v) if len(v) > 1 else 0.0 for p, v in values.items()}
        difference = mean[chosen] - mean["fp32"]
        # standard error of a difference of two means over n seeds each
        noise = 2 * ((sd["fp32"] ** 2 + sd[chosen] ** 2) / len(values["fp32"])) ** 0.5
        lines.append(f"| {name} | {mean['fp32']:.3f} ± {sd['fp32']:.3f} | {mean[chosen]:.3f} ± {sd[chosen]:.3f} | "
                     f"{difference:+.3f} | {'yes' if abs(difference) <= noise else '**no**'} (2 SE {noise:.3f}) |")
    seconds = {p: statistics.median(r["train_s"] for r in runs) for p, runs in by_precision.items()}
    lines += ["", f"Training time per run (median): fp32 {seconds['fp32']:.0f} s, {chosen} {seconds[chosen]:.0f} s "
              f"({seconds['fp32'] / seconds[chosen]:.2f}x)."]
    return lines
