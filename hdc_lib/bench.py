"""`hdc bench [--quick]`: the training pipeline measured against its limits, as ratios.

Absolute times drift on shared machines, so every row compares two things measured in the same
process, warm, as the median of interleaved repeats (both sides see the same load):

  1. decode        dataset loader vs a bare PyAV loop over the same windows      goal >= 0.8
  2. augmentation  batched SpatialAugment vs torchvision.transforms.v2 clip by clip goal >= 5x
  3. data stall    cached toy-world loader vs what the toy training step consumes goal >= 1.5x
  4. overhead      a method's training step vs the bare backbone passes it makes  goal <= 1.3x
  5. scaling       step time against batch size, clip length, tapped levels (figure)
  6. memory        peak memory of each method's step
  7. CUDA          rows 4 and 6 in bf16/fp16 and channels_last_3d, achieved TFLOP/s (skipped on CPU)
  8. precision     each method's step in fp32 vs in train.precision=auto's choice  goal >= 1.5x

Results go to results/bench.md (and .json); a hand-written section below the HISTORY_MARKER line
of an existing results/bench.md (what was changed, with the before/after numbers) is kept.
`hdc bench data ROOT` runs row 1 alone on a real dataset. `hdc bench --device cuda [--steps N]`
trains every paper preset on that device instead (results/bench_cuda.md): do they fit, how fast.
`hdc bench precision-probes` trains a toy preset for 3 seeds in fp32 and in the chosen precision
and compares their toy-world probes (results/precision_probes.json, shown in results/bench.md).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.data.datasets import VideoDataset
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.data.splits import read_split
from hdc_lib.data.toyworld import ToyWorld
from hdc_lib.data.video_io import video_info, write_video
from hdc_lib.backbones import use_precision
from hdc_lib.errors import UserError
from hdc_lib.experiment import build_dataset, build_method, build_optimizer, load_config
from hdc_lib.precision import conv3d_agrees, cpu_has_amx, grad_scaler, resolve_precision

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toy"
METHODS = ("coupled", "hdc", "dclr")
HISTORY_MARKER = "<!-- everything below this line is kept when `hdc bench` rewrites the file -->"


# -- timing --------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(runs: dict, repeats: int, device=torch.device("cpu"), warmup: int = 1,
                        clock=None) -> dict:
    """Median seconds of each zero-argument callable in `runs`, after `warmup` calls each.

    The calls are interleaved (a, b, a, b, ...) so every callable sees the same machine load.
    `clock` is wall time (time.perf_counter) unless given, e.g. time.process_time: this process's
    CPU time, which other jobs do not inflate (with one thread; more threads add their spin-waits).
    """
    clock = clock or time.perf_counter
    for run in runs.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            _sync(device)
            start = clock()
            run()
            _sync(device)
            times[name].append(clock() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


# -- 1. decode -----------------------------------------------------------------------------------
def _synthetic_videos(directory: Path, num_videos: int, num_frames: int, size: int) -> list[tuple[str, int]]:
    """Write smoothly moving colour patterns as H.264 mp4 files; (path, label) pairs."""
    rows, columns = np.mgrid[:size, :size] / size
    samples = []
    for video in range(num_videos):
        time_axis = np.arange(num_frames)[:, None, None] / num_frames
        phase = 2 * np.pi * (rows + columns * (video + 1) / num_videos + time_axis)
        frames = (127.5 + 100 * np.stack([np.sin(phase + shift) for shift in (0, 2, 4)], axis=-1)).astype(np.uint8)
        path = directory / f"class{video % 2}" / f"video{video:03d}.mp4"
        write_video(path, frames)
        samples.append((str(path), video % 2))
    return samples


def _bare_pyav_clip(path: str, indices: np.ndarray) -> dict[int, np.ndarray]:
    """The frames at `indices` with plain PyAV calls: seek to the keyframe before the window, decode
    forward, convert the wanted frames to RGB (assumes timestamps start at 0)."""
    wanted = set(indices.ravel().tolist())
    first, last = min(wanted), max(wanted)
    frames = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        ticks_per_frame = 1 / (Fraction(stream.average_rate) * stream.time_base)
        container.seek(int(first * ticks_per_frame), stream=stream, backward=True)
        for frame in container.decode(stream):
            index = round(frame.pts / ticks_per_frame)
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    return frames


def bench_decode(root: str | os.PathLike | None = None, split_dir: str | os.PathLike | None = None,
                 format: str = "folder", fold: int = 1, *, num_items: int = 64, clip_frames: int = 16,
                 num_clips: int = 1, stride: int = 1, synthetic_videos: int = 8,
                 synthetic_frames: int = 96, synthetic_size: int = 112, repeats: int = 3,
                 seed: int = 0) -> dict:
    """Clips per second of bare PyAV, the dataset loader and the cached loader on the same windows.

    Uses the first `num_items` videos of the dataset at `root` (read as `format`), or, when root is
    None, `synthetic_videos` synthetic videos (repeated to `num_items` items).
    """
    with tempfile.TemporaryDirectory(prefix="hdc-bench-decode-") as scratch:
        if root is None:
            videos = _synthetic_videos(Path(scratch) / "videos", synthetic_videos, synthetic_frames, synthetic_size)
        else:
            split = read_split(format, root, split_dir, fold)
            videos = [(os.path.join(root, path), label) for path, label in split.samples]
        samples = [videos[i % len(videos)] for i in range(num_items)]
        sampler = RandomClipSampler(clip_frames, stride, num_clips)
        loader = VideoDataset(samples, sampler, seed=seed)
        cached = VideoDataset(samples, sampler, seed=seed, cache_dir=Path(scratch) / "cache")
        windows = [(path, sampler(video_info(path).num_frames, loader.item_rng(index)))
                   for index, (path, _) in enumerate(samples)]
        seconds = interleaved_medians({
            "bare": lambda: [_bare_pyav_clip(path, indices) for path, indices in windows],
            "loader": lambda: [loader[i] for i in range(num_items)],
            "cached": lambda: [cached[i] for i in range(num_items)],  # the warm-up fills the cache
        }, repeats)
    clips = num_items * num_clips
    return {"items": num_items, "clips": clips, "clip_frames": clip_frames,
            "bare_pyav_clips_per_s": clips / seconds["bare"], "loader_clips_per_s": clips / seconds["loader"],
            "cached_loader_clips_per_s": clips / seconds["cached"],
            "loader_vs_bare": seconds["bare"] / seconds["loader"]}


# -- 2. augmentation ------------------------------------------------------------------------------
def bench_augment(batch: int = 64, frames: int = 8, in_size: int = 64, out_size: int = 32,
                  repeats: int = 5) -> dict[str, float]:
    """Seconds of one batch of views: batched SpatialAugment vs torchvision.transforms.v2.

    The torchvision pipeline (ToDtype, RandomResizedCrop, flip, RandomApply(ColorJitter),
    RandomGrayscale, RandomApply(GaussianBlur), Normalize) runs clip by clip on CPU, which is how a
    Dataset would use it to get per-sample parameters. Both use torch's current thread count.
    """
    from torchvision.transforms import v2

    cfg = AugmentConfig(size=out_size)
    augment = SpatialAugment(cfg)
    per_clip = v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(out_size, scale=cfg.scale, ratio=cfg.ratio, antialias=cfg.antialias),
        v2.RandomHorizontalFlip(cfg.flip_p),
        v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p),
        v2.RandomGrayscale(cfg.gray_p),
        v2.RandomApply([v2.GaussianBlur(cfg.kernel_size, cfg.blur_sigma)], p=cfg.blur_p),
        v2.Normalize(cfg.mean, cfg.std),
    ])
    clips = torch.randint(0, 256, (batch, frames, in_size, in_size, 3), dtype=torch.uint8)
    seconds = interleaved_medians({
        "batched": lambda: augment(clips),
        # per clip: (T, H, W, C) -> (T, C, H, W) in, (C, T, H, W) out
        "torchvision": lambda: torch.stack([per_clip(clip.permute(0, 3, 1, 2)).permute(1, 0, 2, 3)
                                            for clip in clips]),
    }, repeats)
    return {"batched_s": seconds["batched"], "torchvision_s": seconds["torchvision"],
            "speedup": seconds["torchvision"] / seconds["batched"]}


# -- a method's training step and the backbone passes it makes -------------------------------------
def toy_method(name: str, overrides: tuple[str, ...] = (), world: str | Path = "data/toyworld"):
    """The toy preset's config and method for `name` (coupled, hdc, dclr, supervised), in the
    memory format and the precision training uses on the CPU."""
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.root={world}", *overrides])
    torch.manual_seed(0)
    method = use_precision(build_method(cfg, num_classes=8), resolve_precision(cfg.train.precision, "cpu"))
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last_3d)
    return cfg, method


def random_windows(method, batch: int, size: int | tuple[int, int] = 64) -> torch.Tensor:
    """uint8 (B, clips, frames, H, W, 3) windows of the shape the method's sampler delivers; `size`
    is H = W or (H, W)."""
    request = method.clip_request()
    height, width = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, request["num_clips"], request["num_frames"], height, width, 3),
                         dtype=torch.uint8, generator=generator)


def make_step(method, optimizer, views: dict, scaler: torch.amp.GradScaler | None = None):
    """One optimiser step on fixed views: forward, backward, update (the loop's step without data),
    in the precision the method's backbones were given (`use_precision`); `scaler` for fp16."""
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)

    def step():
        loss, _ = method(views)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


class BackbonePasses:
    """Inside `with BackbonePasses(method) as passes:`, records every `features` call of the method's
    backbones: input shape, deepest stage, whether it ran with gradient. `bare_step` replays the
    same passes on a bare backbone."""

    def __init__(self, method):
        self.calls: list[tuple[tuple[int, ...], str, bool]] = []
        self._backbones = [module for module in method.modules() if hasattr(module, "stage_names")]

    def __enter__(self):
        for backbone in self._backbones:
            original = backbone.features

            def recording(x, stages=None, _original=original, _names=backbone.stage_names):
                wanted = _names if stages is None else tuple(stages)
                self.calls.append((tuple(x.shape), max(wanted, key=_names.index), torch.is_grad_enabled()))
                return _original(x, stages)
            backbone.features = recording  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc):
        for backbone in self._backbones:
            del backbone.features

    @property
    def clips(self) -> int:
        return sum(shape[0] for shape, _, _ in self.calls)

    def bare_step(self, backbone, optimizer, device: torch.device, memory_format=torch.contiguous_format):
        """The recorded passes on `backbone` (random inputs, in the backbone's precision): forward
        with gradient where the method had it, a sum of the outputs as the loss, backward, update."""
        inputs = [(torch.randn(shape, device=device).contiguous(memory_format=memory_format), deepest, grad)
                  for shape, deepest, grad in self.calls]

        def step():
            loss = 0.0
            for x, deepest, grad in inputs:
                with torch.set_grad_enabled(grad):
                    out = backbone.features(x, (deepest,))[deepest]
                if grad:
                    loss = loss + out.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step


def peak_memory(step, device: torch.device) -> int:
    """Peak bytes allocated during one call of `step` above what was allocated before it.

    CUDA: the allocator's peak counter. CPU: the profiler's allocation events in time order
    (each op's own allocations and frees), accumulated; the maximum of the running sum.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(prof.events(), key=lambda event: event.time_range.start)
    running = itertools.accumulate(event.self_cpu_memory_usage for event in events)
    return max(0, max(running, default=0))


def step_flops(step) -> int:
    """Floating-point operations of one call of `step` (torch's FLOP counter: convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


# -- 4 + 6 (+ 7). method overhead and memory -------------------------------------------------------
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


# -- 8. precision ----------------------------------------------------------------------------------
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


# -- the paper presets on a device (`hdc bench --device cuda`) --------------------------------------
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
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
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


# -- 3. data stall ---------------------------------------------------------------------------------
def bench_stall(batches: int = 6, repeats: int = 3, methods: tuple[str, ...] = METHODS + ("supervised",),
                world: str | Path = "data/toyworld", overrides: tuple[str, ...] = ()) -> list[dict]:
    """Videos/s of the cached toy-world loader (DataLoader, workers as configured) vs videos/s of the
    toy training step (views + forward + backward + update), per method. `overrides` are config
    overrides (e.g. a smaller world's `data.toyworld`)."""
    from torch.utils.data import DataLoader

    rows = []
    for name in methods:
        cfg, method = toy_method(name, overrides, world=world)
        dataset = build_dataset(cfg, train=True, clip_sampler=RandomClipSampler(**method.clip_request()))
        batch = cfg.train.batch_size
        order = [list(range(i * batch, (i + 1) * batch)) for i in range(min(batches, len(dataset) // batch))]

        def load():
            return [item for item in DataLoader(dataset, batch_sampler=order, num_workers=cfg.data.workers)]

        first = load()[0]  # also fills the decoded-video cache
        optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)

        def consume():
            for _ in order:
                views = method.make_views(first["video"], generator=generator)
                views["label"] = first["label"]
                make_step(method, optimizer, views)()
        seconds = interleaved_medians({"loader": load, "step": consume}, repeats)
        videos = len(order) * batch
        rows.append({"method": name, "workers": cfg.data.workers, "loader_videos_per_s": videos / seconds["loader"],
                     "step_videos_per_s": videos / seconds["step"], "ratio": seconds["step"] / seconds["loader"]})
    return rows


# -- 5. scaling ------------------------------------------------------------------------------------
SCALING_AXES = {"batch": (8, 16, 32, 64), "clip_frames": (4, 8, 16), "levels": (1, 2, 3)}
QUICK_AXES = {"batch": (8, 32), "clip_frames": (4, 8), "levels": (1, 3)}
LEVEL_SETS = {1: ["layer4"], 2: ["layer3", "layer4"], 3: ["layer2", "layer3", "layer4"]}


def bench_scaling(axes: dict = SCALING_AXES, repeats: int = 3, base_batch: int = 32) -> dict[str, list[tuple]]:
    """HDC step seconds against batch size, frames per view and number of tapped levels, one axis at
    a time (others at the toy preset's values, batch `base_batch`)."""
    results = {}
    for axis, values in axes.items():
        points = []
        for value in values:
            batch = value if axis == "batch" else base_batch
            overrides = ()
            if axis == "clip_frames":
                overrides = (f"model.clip_frames={value}",)
            elif axis == "levels":
                overrides = (f"model.levels={json.dumps(LEVEL_SETS[value])}",)
            _, method = toy_method("hdc", overrides)
            views = method.make_views(random_windows(method, batch), generator=torch.Generator().manual_seed(0))
            optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
            seconds = interleaved_medians({"step": make_step(method, optimizer, views)}, repeats)
            points.append((value, seconds["step"]))
        results[axis] = points
    return results


def scaling_figure(results: dict[str, list[tuple]], path: str | Path | None = None):
    """One small panel per axis: step milliseconds against the axis value."""
    from matplotlib.figure import Figure

    from hdc_lib import viz

    labels = {"batch": "batch size (videos)", "clip_frames": "frames per view", "levels": "tapped levels"}
    fig = Figure(figsize=(3 * len(results), 2.6))
    for i, (axis, points) in enumerate(results.items()):
        ax = fig.add_subplot(1, len(results), i + 1)
        x, seconds = zip(*points)
        ax.plot(x, [1000 * s for s in seconds], marker="o")
        ax.set(xlabel=labels[axis], ylabel="HDC step (ms)" if i == 0 else None, xticks=list(x))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return viz._save(fig, path)


# -- fp32 vs the chosen precision, end to end (`hdc bench precision-probes`) ------------------------
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


# -- wall times of the things users run -----------------------------------------------------------
def time_notebooks(paths: list[Path], inplace: bool = False, timeout: int = 900) -> dict[str, float]:
    """Run each notebook top to bottom in its default mode (HDC_FAST unset) with the python3
    kernel, from its own folder; seconds per notebook. `inplace` stores the fresh outputs."""
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    seconds = {}
    environment = {k: v for k, v in os.environ.items() if k not in ("HDC_FAST", "HDC_LONG")}
    previous = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        for path in paths:
            path = Path(path)
            notebook = nbformat.read(path, as_version=4)
            started = time.perf_counter()
            ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
                notebook, {"metadata": {"path": str(path.parent)}})
            seconds[path.name] = time.perf_counter() - started
            if inplace:
                nbformat.write(notebook, path)
    finally:
        os.environ.clear()
        os.environ.update(previous)
    return seconds


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
    """The toy reproduction's and the notebooks' measured wall times, from the files their runs wrote."""
    lines = ["## Wall times (from the runs that produced them)", ""]
    ablation = results_dir / "toy_ablation.json"
    if ablation.exists():
        run = json.loads(ablation.read_text())
        lines.append(f"- `make demo` (`hdc reproduce --preset toy`, commit {run['commit']}, {run['epochs']} epochs "
                     f"x {len(run['seeds'])} seeds): {run['seconds'] / 60:.1f} min")
    notebooks = results_dir / "notebook_times.json"
    if notebooks.exists():
        run = json.loads(notebooks.read_text())
        lines.append(f"- notebooks in their default mode (`{run['command']}`, commit {run['commit']}):")
        lines += [f"  - {name}: {seconds:.0f} s" for name, seconds in run["seconds"].items()]
    return lines + [""] if len(lines) > 2 else []


def git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# -- the report ------------------------------------------------------------------------------------
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
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
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


def format_report(report: dict, command: str, results_dir: Path = Path("results")) -> str:
    """results/bench.md's generated part."""
    d, a = report["decode"], report["augment"]
    stall_min = min(report["stall"], key=lambda r: r["ratio"])
    worst = max(report["methods"], key=lambda r: r["overhead"])
    pr = report["precision"]
    slowest = min(pr["rows"], key=lambda r: r["toy_speedup"])
    why = (f"AMX {'yes' if pr['amx'] else 'no'}, bf16 conv3d check "
           f"{'passed' if pr['bf16_conv3d_agrees'] else 'failed'}")
    lines = [
        "# `hdc bench`: the pipeline against its limits",
        "",
        f"Command: `{command}` · {report['machine']} · {report['seconds']:.0f} s in total. "
        "Each ratio compares two things measured in the same process, warm, median of interleaved repeats.",
        "",
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
        f"| 8. precision | auto = {pr['precision']} ({why}); slowest gain: {slowest['method']}, toy step fp32 "
        f"{1000 * slowest['toy_fp32_s']:.0f} ms vs {pr['precision']} {1000 * slowest['toy_low_s']:.0f} ms | "
        f"{slowest['toy_speedup']:.2f}x | >= 1.5x | {_verdict(slowest['toy_speedup'], 1.5)} |",
        "",
        "## 3. Data stall, per method (toy preset: batch 64, workers as configured)",
        "",
        "| method | workers | loader videos/s | step videos/s | loader / step |",
        "|---|---|---|---|---|",
        *[f"| {r['method']} | {r['workers']} | {r['loader_videos_per_s']:.0f} | {r['step_videos_per_s']:.0f} | "
          f"{r['ratio']:.1f}x |" for r in report["stall"]],
        "",
        f"## 4 and 6. Method step vs the bare backbone passes it makes; peak memory ({worst['precision']})",
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
          for r in report["methods"]],
        "",
        "## 5. Scaling (HDC step, toy preset)",
        "",
        "![scaling](../figures/bench_scaling.png)",
        "",
        *[f"- {axis}: " + ", ".join(f"{v} -> {1000 * s:.0f} ms" for v, s in points)
          for axis, points in report["scaling"].items()],
        "",
        f"## 8. Precision: each method's step in fp32 and in {pr['precision']} (toy preset, batch "
        f"{pr['rows'][0]['batch']})",
        "",
        f"`train.precision=auto` chose {pr['precision']} ({why}). Two copies of each method from the same "
        "initial weights, timed interleaved on one thread in CPU time (other jobs on the machine do not "
        "enter it). Model step: forward, backward and update on fixed views (what "
        "the precision changes); toy step: the views made from uint8 windows (fp32 augmentation), then the "
        "model step.",
        "",
        f"| method | model step fp32 ms | model step {pr['precision']} ms | ratio | toy step fp32 ms | "
        f"toy step {pr['precision']} ms | ratio |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['method']} | {1000 * r['model_fp32_s']:.0f} | {1000 * r['model_low_s']:.0f} | {r['model_speedup']:.2f}x | "
          f"{1000 * r['toy_fp32_s']:.0f} | {1000 * r['toy_low_s']:.0f} | {r['toy_speedup']:.2f}x |" for r in pr["rows"]],
        "",
        *precision_probes_section(Path(results_dir)),
        "## 7. CUDA",
        "",
    ]
    if "cuda" in report:
        lines += ["| method | step ms | bare ms | overhead | backbone TFLOP/s | peak MB |", "|---|---|---|---|---|---|",
                  *[f"| {r['method']} | {1000 * r['method_s']:.1f} | {1000 * r['bare_s']:.1f} | {r['overhead']:.2f}x | "
                    f"{r['bare_tflops']:.2f} | {r['peak_mb']:.0f} |" for r in report["cuda"]]]
    else:
        lines.append("Skipped: no CUDA device on this machine.")
    lines += ["", *wall_times_section(Path(results_dir))]
    return "\n".join(lines) + "\n"


def write_report(report: dict, results_dir: str | Path = "results", figures_dir: str | Path = "figures",
                 command: str = "hdc bench") -> Path:
    """results/bench.md (keeping the hand-written part below HISTORY_MARKER), bench.json, the figure."""
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    scaling_figure(report["scaling"], figures_dir / "bench_scaling.png")
    path = results_dir / "bench.md"
    kept = ""
    if path.exists() and HISTORY_MARKER in (old := path.read_text()):
        kept = old.split(HISTORY_MARKER, 1)[1]
    path.write_text(format_report(report, command, results_dir) + "\n" + HISTORY_MARKER + (kept or "\n"))
    (results_dir / "bench.json").write_text(json.dumps(report, indent=1))
    return path


# -- CLI -------------------------------------------------------------------------------------------
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    command = f"hdc bench --device {args.device} --steps {args.steps}" + (f" --batch {args.batch}" if args.batch else "")
    text = format_presets(rows, command, f"{name}, torch {torch.__version__}")
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
    result["commit"] = git_commit()
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
    seconds = time_notebooks(paths, inplace=args.inplace)
    for name, value in seconds.items():
        print(f"{name:40s} {value:6.0f} s")
    if not args.paths:  # the full set: record it for results/bench.md and the README
        command = "hdc bench notebooks" + (" --inplace" if args.inplace else "")
        record = {"command": command, "commit": git_commit(), "seconds": seconds}
        Path(args.results).mkdir(parents=True, exist_ok=True)
        (Path(args.results) / "notebook_times.json").write_text(json.dumps(record, indent=1))
    return 0
