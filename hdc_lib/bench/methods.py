"""Row 4, method overhead and peak memory (and row 7, the same on CUDA): each method's training step
against the bare backbone passes it makes."""
from __future__ import annotations

import torch

from hdc_lib.backbones import use_precision
from hdc_lib.bench.steps import METHODS, BackbonePasses, make_step, random_windows, toy_method
from hdc_lib.bench.timing import interleaved_medians, peak_memory, step_flops
from hdc_lib.experiment import build_method
from hdc_lib.precision import grad_scaler, resolve_precision


def bench_methods(batch: int = 32, repeats: int = 5, device: str | torch.device = "cpu", precision: str = "auto",
                  channels_last: bool | None = None, methods: tuple[str, ...] = METHODS) -> list[dict]:
    """For each method: its step vs the bare backbone passes it makes, views per video, peak memory,
    both in `precision` (auto: as training resolves it on `device`). `channels_last` None: as the toy
    config trains (train.channels_last)."""
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    rows = []
    for name in methods:
        cfg, method = toy_method(name)
        use_channels_last = cfg.train.channels_last if channels_last is None else channels_last
        memory_format = torch.channels_last_3d if use_channels_last else torch.contiguous_format
        method = use_precision(method.to(device, memory_format=memory_format), precision)
        generator = torch.Generator(device).manual_seed(0)
        views = method.make_views(random_windows(method, batch).to(device), generator=generator)
        views["label"] = torch.zeros(batch, dtype=torch.long, device=device)
        views = {k: v.contiguous(memory_format=memory_format) if v.dim() == 5 else v for k, v in views.items()}
        optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
        step = make_step(method, optimizer, views, grad_scaler(precision, device))
        with BackbonePasses(method) as passes:
            step()
        bare_backbone = build_method(cfg, num_classes=8).backbone.to(device, memory_format=memory_format)
        use_precision(bare_backbone, precision)
        bare_optimizer = torch.optim.AdamW(bare_backbone.parameters(), lr=1e-4)
        bare = passes.bare_step(bare_backbone, bare_optimizer, device, memory_format)
        seconds = interleaved_medians({"method": step, "bare": bare}, repeats, device)
        flops = step_flops(bare)
        rows.append({
            "method": name, "batch": batch, "precision": precision,
            "views_per_video": sum(v.dim() == 5 for v in views.values()),
            "backbone_passes": len(passes.calls),
            "grad_clips": sum(shape[0] for shape, _, grad in passes.calls if grad),
            "clips": passes.clips, "method_s": seconds["method"], "bare_s": seconds["bare"],
            "overhead": seconds["method"] / seconds["bare"],
            "bare_tflops": flops / seconds["bare"] / 1e12,
            "peak_mb": peak_memory(step, device) / 2 ** 20, "bare_peak_mb": peak_memory(bare, device) / 2 ** 20,
        })
    return rows
