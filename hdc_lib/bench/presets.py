"""`hdc bench --device cuda`: every paper preset trained for a few hundred steps on a device: does it
fit, how fast, and does the data loader keep up (results/bench_cuda.md)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from hdc_lib.backbones import use_precision
from hdc_lib.bench.steps import CONFIGS, BackbonePasses, make_step, random_windows
from hdc_lib.bench.timing import peak_memory, step_flops, synchronize
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.errors import UserError
from hdc_lib.experiment import build_dataset, build_method, build_optimizer, load_config
from hdc_lib.precision import grad_scaler, resolve_precision


PAPER_PRESETS = tuple(sorted((CONFIGS.parent / "ucf101").glob("*.yaml")) +
                      sorted((CONFIGS.parent / "kinetics400").glob("*.yaml")))


def bench_presets(device: str | torch.device = "cuda", steps: int = 300, presets=PAPER_PRESETS,
                  overrides: tuple[str, ...] = (), loader_batches: int = 10) -> list[dict]:
    """Each paper preset trained for `steps` steps on `device` as `hdc pretrain` would (the preset's
    precision, auto: bf16 autocast where supported, else fp16 with a grad scaler; channels_last_3d),
    one row each: clips/s through the backbone, peak memory, achieved TFLOP/s (the FLOPs of one step
    counted by torch.utils.flop_counter, over the measured step time) and the data-loader margin
    (videos/s the preset's DataLoader delivers over videos/s the step consumes). Without the dataset
    at data.root the steps run on random windows of the preset's frame size and the margin is None.
    A preset that does not fit in memory gets a row saying so; the others still run. The timed steps
    follow a warm-up (cuDNN's algorithm search, the queue filling) of a tenth as many, at most 10."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device on this machine (torch {torch.__version__})")
    warmup = max(1, min(10, steps // 10))
    rows = []
    for path in presets:
        cfg = load_config(path, list(overrides))
        name = f"{Path(path).parent.name}/{Path(path).stem}"
        try:
            rows.append({"preset": name, **_bench_preset(cfg, device, steps, warmup, loader_batches)})
        except torch.OutOfMemoryError:
            rows.append({"preset": name, "batch": cfg.train.batch_size,
                         "error": f"out of memory at batch {cfg.train.batch_size} (try --batch)"})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _bench_preset(cfg, device: torch.device, steps: int, warmup: int, loader_batches: int) -> dict:
    from torch.utils.data import DataLoader

    precision = resolve_precision(cfg.train.precision, device)
    torch.manual_seed(0)
    method = build_method(cfg).to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last_3d)
    use_precision(method, precision)
    batch = cfg.train.batch_size
    loader_videos_per_s, data = None, f"random windows ({cfg.data.root} not found)"
    if Path(cfg.data.root).exists():
        dataset = build_dataset(cfg, train=True, clip_sampler=RandomClipSampler(**method.clip_request()))
        order = [list(range(i * batch, (i + 1) * batch)) for i in range(min(loader_batches, len(dataset) // batch))]
        if not order:
            raise ValueError(f"{cfg.data.root}: {len(dataset)} videos are fewer than one batch of {batch}")
        started = time.perf_counter()
        loaded = list(DataLoader(dataset, batch_sampler=order, num_workers=cfg.data.workers,
                                 pin_memory=device.type == "cuda"))
        loader_videos_per_s = len(order) * batch / (time.perf_counter() - started)
        windows, data = loaded[0]["video"], f"{cfg.data.dataset} at {cfg.data.root}, {cfg.data.workers} workers"
    else:
        windows = random_windows(method, batch, tuple(cfg.data.frame_size or (128, 171)))
    windows = windows.to(device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    optimizer, _ = build_optimizer(cfg.optim, method.trainable_parameters(), steps, 1)
    scaler = grad_scaler(precision, device)
    generator = torch.Generator(device).manual_seed(0)

    def step():  # the loop's step: views from the windows on the device, forward, backward, update
        views = {**method.make_views(windows, generator=generator), "label": labels}
        make_step(method, optimizer, views, scaler)()
    with BackbonePasses(method) as passes:
        step()
    for _ in range(warmup - 1):
        step()
    flops = step_flops(step)
    peak_mb = peak_memory(step, device) / 2 ** 20
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    step_s = (time.perf_counter() - started) / steps
    step_videos_per_s = batch / step_s
    return {"device": str(device), "precision": precision, "batch": batch, "steps": steps, "data": data,
            "clips_per_step": passes.clips, "step_s": step_s, "clips_per_s": passes.clips / step_s,
            "peak_mb": peak_mb, "tflops": flops / step_s / 1e12, "step_videos_per_s": step_videos_per_s,
            "loader_videos_per_s": loader_videos_per_s,
            "margin": None if loader_videos_per_s is None else loader_videos_per_s / step_videos_per_s}


def format_presets(rows: list[dict], command: str, machine: str) -> str:
    """The paper-preset bench as a markdown page."""
    lines = [f"# `{command}`: the paper presets", "", f"{machine}. Loader margin: videos/s the preset's "
             "DataLoader delivers over videos/s the training step consumes (>= 1.5 keeps the device busy).", "",
             "| preset | precision | batch | clips/s | step ms | peak MB | TFLOP/s | loader margin | data |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | | {r['batch']} | {r['error']} | | | | | |")
            continue
        margin = "n/a" if r["margin"] is None else f"{r['margin']:.1f}x"
        lines.append(f"| {r['preset']} | {r['precision']} | {r['batch']} | {r['clips_per_s']:.1f} | "
                     f"{1000 * r['step_s']:.0f} | {r['peak_mb']:.0f} | {r['tflops']:.3f} | {margin} | {r['data']} |")
    return "\n".join(lines) + "\n"
