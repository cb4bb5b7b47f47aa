"""How far do the toy probes move when a shipped model's weights move far less than float16 rounds?

Float16 rounds a weight by up to 2^-11 of itself (about 5e-4). This script multiplies every
floating-point tensor of a finished full-preset run's shipped part by (1 + r * noise), with noise
standard normal and r = 1e-6 and 1e-5 (500 and 50 times finer than float16), and reruns every toy
probe. When such perturbations already move a probe by more than shipped_weights.FP16_TOLERANCE,
that tolerance measures the probes' own refitting (the logistic fits and their solver), not what
half precision does to the model.

    PYTHONPATH=. python results/scripts/probe_noise_floor.py dclr coupled [--log results/probe_noise_floor.jsonl]

Needs the runs' final checkpoints in runs/reproduce/full/<row>/seed0/ (the machine that trained them).
"""
import argparse
import json
import time
from pathlib import Path

import torch

from hdc_lib.features import eval_transform
from hdc_lib.probes import toy_probes
from hdc_lib.provenance import code_commit, machine_description
from hdc_lib.reproduce import plan_runs
from hdc_lib.runtime import setup
from hdc_lib.shipped_weights import HalfPrecisionTrial, model_from_part

SCALES = (1e-6, 1e-5)


def perturbed(part: dict, scale: float, seed: int) -> dict:
    """Every floating-point tensor times (1 + scale * standard normal noise)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: v * (1 + scale * torch.randn(v.shape, generator=generator)) if v.is_floating_point() else v
            for k, v in part.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+")
    parser.add_argument("--log", default="results/probe_noise_floor.jsonl")
    args = parser.parse_args()
    device = setup().device
    plan = plan_runs("full", None, None, "results", rows=tuple(args.rows), seeds=(0,))
    for row in args.rows:
        started = time.perf_counter()
        trial = HalfPrecisionTrial(plan, row, device)
        line = {"row": row, "float16": {"change": trial.change, "metric": trial.metric}, "perturbed": {}}
        for scale in SCALES:
            model = model_from_part(trial.cfg, perturbed(trial.part, scale, seed=1), plan.num_actions, device,
                                    Path(trial.cfg.train.out_dir))
            probes = toy_probes(trial.cfg, model.backbone, eval_transform(model), device, plan.preset.eval_clips)
            moved = {k: probes[k] - trial.full_probes[k] for k in probes}
            worst = max(moved, key=lambda k: abs(moved[k]))
            line["perturbed"][str(scale)] = {"largest": abs(moved[worst]), "metric": worst,
                                             "moved": {k: round(v, 4) for k, v in moved.items() if abs(v) > 1e-9}}
        line.update(commit=code_commit(), machine=machine_description(device),
                    seconds=round(time.perf_counter() - started, 1))
        print(json.dumps(line), flush=True)
        with open(args.log, "a") as log:
            log.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
