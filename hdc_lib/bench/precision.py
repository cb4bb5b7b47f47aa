"""Row 5, precision: each method's training step in fp32 and in `train.precision=auto`'s choice."""
from __future__ import annotations

import time

import torch

from hdc_lib.backbones import use_precision
from hdc_lib.bench.steps import METHODS, make_step, random_windows, toy_method
from hdc_lib.bench.timing import interleaved_medians
from hdc_lib.data.toyworld import ToyWorld
from hdc_lib.precision import conv3d_agrees, cpu_has_amx, resolve_precision


def bench_precision(batch: int = 64, repeats: int = 5, methods: tuple[str, ...] = METHODS + ("supervised",),
                    precision: str = "auto") -> dict:
    """Each method's training step in fp32 and in `precision` (auto: what training picks on this
    CPU), two copies from the same initial weights, timed interleaved in this process:
    - model step: forward, backward and update on fixed views (what the precision changes);
    - toy step: the views made from uint8 windows (augmentation, fp32 in both), then the model step.
    Timed on one thread in CPU time: on a shared machine the wall time of two threads mostly
    measures the other jobs (two loaded runs gave ratios from 0.4x to 2.3x). Also what `auto`
    looked at: AMX and the bf16 conv3d check."""
    chosen = resolve_precision(precision, "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [_precision_row(name, batch, repeats, chosen) for name in methods]
    finally:
        torch.set_num_threads(threads)
    return {"precision": chosen, "amx": cpu_has_amx(), "bf16_conv3d_agrees": conv3d_agrees("cpu", "bf16"),
            "rows": rows}


def _precision_row(name: str, batch: int, repeats: int, chosen: str) -> dict:
    """Two copies of method `name` (fp32 and `chosen`) and their timed model and toy steps."""
    runs = {}
    for label, compute in (("fp32", "fp32"), ("low", chosen)):
        cfg, method = toy_method(name)
        use_precision(method, compute)
        windows = random_windows(method, batch, ToyWorld(**cfg.data.toyworld).size)  # the world's frames
        labels = torch.zeros(batch, dtype=torch.long)
        generator = torch.Generator().manual_seed(0)
        views = {**method.make_views(windows, generator=generator), "label": labels}
        optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)

        def toy_step(method=method, windows=windows, labels=labels, generator=generator, optimizer=optimizer):
            views = {**method.make_views(windows, generator=generator), "label": labels}
            make_step(method, optimizer, views)()
        runs[f"model {label}"] = make_step(method, optimizer, views)
        runs[f"toy {label}"] = toy_step
    seconds = interleaved_medians(runs, repeats, clock=time.process_time)
    return {"method": name, "batch": batch,
            **{f"{kind}_{label}_s": seconds[f"{kind} {label}"] for kind in ("model", "toy")
               for label in ("fp32", "low")},
            "model_speedup": seconds["model fp32"] / seconds["model low"],
            "toy_speedup": seconds["toy fp32"] / seconds["toy low"]}
