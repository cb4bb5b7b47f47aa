"""`hdc bench [--quick]`: the training pipeline measured against its limits, as ratios.

Absolute times drift on shared machines, so every row compares two things measured in the same
process, warm, as the median of interleaved repeats (both sides see the same load):

  1. decode        dataset loader vs a bare PyAV loop over the same windows      goal >= 0.8
  2. augmentation  batched SpatialAugment vs torchvision.transforms.v2 clip by clip goal >= 5x
  3. data stall    cached toy-world loader vs what the toy training step consumes goal >= 1.5x
  4. overhead      a method's training step vs the bare backbone passes it makes  goal <= 1.3x
  5. scaling       step time against batch size, clip length, tapped levels (figure)
  6. memory        peak memory of each method's step
  7. CUDA          rows 4 and 6 with AMP and channels_last_3d, achieved TFLOP/s (skipped on CPU)

Results go to results/bench.md (and .json); a hand-written section below the HISTORY_MARKER line
of an existing results/bench.md (what was changed, with the before/after numbers) is kept.
`hdc bench data ROOT` runs row 1 alone on a real dataset.
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
from hdc_lib.data.video_io import video_info, write_video
from hdc_lib.experiment import build_dataset, build_method, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toy"
METHODS = ("coupled", "hdc", "dclr")
HISTORY_MARKER = "<!-- everything below this line is kept when `hdc bench` rewrites the file -->"


# -- timing --------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(runs: dict, repeats: int, device=torch.device("cpu"), warmup: int = 1) -> dict:
    """Median seconds of each zero-argument callable in `runs`, after `warmup` calls each.

    The calls are interleaved (a, b, a, b, ...) so every callable sees the same machine load.
    """
    for run in runs.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - start)
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
    memory format training uses."""
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.root={world}", *overrides])
    torch.manual_seed(0)
    method = build_method(cfg, num_classes=8)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last_3d)
    return cfg, method


def random_windows(method, batch: int, size: int = 64) -> torch.Tensor:
    """uint8 (B, clips, frames, size, size, 3) windows of the shape the method's sampler delivers."""
    request = method.clip_request()
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, request["num_clips"], request["num_frames"], size, size, 3),
                         dtype=torch.uint8, generator=generator)


def make_step(method, optimizer, views: dict, device: torch.device, amp: bool = False):
    """One optimiser step on fixed views: forward, backward, update (the loop's step without data)."""
    from hdc_lib.train import autocast

    def step():
        with autocast(device, amp):
            loss, _ = method(views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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

    def bare_step(self, backbone, optimizer, device: torch.device, amp: bool = False,
                  memory_format=torch.contiguous_format):
        """The recorded passes on `backbone` (random inputs): forward with gradient where the
        method had it, a sum of the outputs as the loss, backward, update."""
        from hdc_lib.train import autocast

        inputs = [(torch.randn(shape, device=device).contiguous(memory_format=memory_format), deepest, grad)
                  for shape, deepest, grad in self.calls]

        def step():
            loss = 0.0
            with autocast(device, amp):
                for x, deepest, grad in inputs:
                    with torch.set_grad_enabled(grad):
                        out = backbone.features(x, (deepest,))[deepest]
                    if grad:
                        loss = loss + out.float().mean()
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
def bench_methods(batch: int = 32, repeats: int = 5, device: str | torch.device = "cpu", amp: bool = False,
                  channels_last: bool | None = None, methods: tuple[str, ...] = METHODS) -> list[dict]:
    """For each method: its step vs the bare backbone passes it makes, views per video, peak memory.
    `channels_last` None: as the toy config trains (train.channels_last)."""
    device = torch.device(device)
    rows = []
    for name in methods:
        cfg, method = toy_method(name)
        use_channels_last = cfg.train.channels_last if channels_last is None else channels_last
        memory_format = torch.channels_last_3d if use_channels_last else torch.contiguous_format
        method = method.to(device, memory_format=memory_format)
        generator = torch.Generator(device).manual_seed(0)
        views = method.make_views(random_windows(method, batch).to(device), generator=generator)
        views["label"] = torch.zeros(batch, dtype=torch.long, device=device)
        views = {k: v.contiguous(memory_format=memory_format) if v.dim() == 5 else v for k, v in views.items()}
        optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
        step = make_step(method, optimizer, views, device, amp)
        with BackbonePasses(method) as passes:
            step()
        bare_backbone = build_method(cfg, num_classes=8).backbone.to(device, memory_format=memory_format)
        bare_optimizer = torch.optim.AdamW(bare_backbone.parameters(), lr=1e-4)
        bare = passes.bare_step(bare_backbone, bare_optimizer, device, amp, memory_format)
        seconds = interleaved_medians({"method": step, "bare": bare}, repeats, device)
        flops = step_flops(bare)
        rows.append({
            "method": name, "batch": batch, "views_per_video": sum(v.dim() == 5 for v in views.values()),
            "backbone_passes": len(passes.calls),
            "grad_clips": sum(shape[0] for shape, _, grad in passes.calls if grad),
            "clips": passes.clips, "method_s": seconds["method"], "bare_s": seconds["bare"],
            "overhead": seconds["method"] / seconds["bare"],
            "bare_tflops": flops / seconds["bare"] / 1e12,
            "peak_mb": peak_memory(step, device) / 2 ** 20, "bare_peak_mb": peak_memory(bare, device) / 2 ** 20,
        })
    return rows


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
                make_step(method, optimizer, views, torch.device("cpu"))()
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
            seconds = interleaved_medians({"step": make_step(method, optimizer, views, torch.device("cpu"))}, repeats)
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
    }
    if torch.cuda.is_available():
        report["cuda"] = bench_methods(batch=32, repeats=repeats, device="cuda", amp=True, channels_last=True)
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
        "",
        "## 3. Data stall, per method (toy preset: batch 64, workers as configured)",
        "",
        "| method | workers | loader videos/s | step videos/s | loader / step |",
        "|---|---|---|---|---|",
        *[f"| {r['method']} | {r['workers']} | {r['loader_videos_per_s']:.0f} | {r['step_videos_per_s']:.0f} | "
          f"{r['ratio']:.1f}x |" for r in report["stall"]],
        "",
        "## 4 and 6. Method step vs the bare backbone passes it makes; peak memory",
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


def run_bench(args) -> int:
    report = run_all(args.quick, args.world)
    command = "hdc bench" + (" --quick" if args.quick else "")
    path = write_report(report, args.results, args.figures, command)
    print(format_report(report, command))
    print(f"written: {path}")
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
