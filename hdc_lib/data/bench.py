"""`hdc bench data`: how fast the dataset loader decodes clips, against a bare PyAV loop.

The same windows (the clips the dataset draws for items 0..N-1 in epoch 0) are decoded three
ways, each in one process:
  bare PyAV      open, seek to the keyframe before the window, decode forward, convert the
                 window's frames to RGB: the least any loader has to do;
  loader         `VideoDataset[i]` (metadata, sampling, our decode loop, tensor item);
  cached loader  the same dataset with a `DecodedVideoCache`, after a pass that fills it.
The goal is loader >= 0.8 x bare PyAV. Without a dataset, synthetic videos are written to a
temporary directory. A benchmark, not a test: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .datasets import VideoDataset
from .samplers import RandomClipSampler
from .splits import read_split
from .video_io import video_info, write_video


def _synthetic_dataset(directory: Path, num_videos: int, num_frames: int,
                       size: int) -> list[tuple[str, int]]:
    """Write smoothly moving colour patterns as H.264 mp4 files; (path, label) pairs."""
    rows, columns = np.mgrid[:size, :size] / size
    samples = []
    for video in range(num_videos):
        time_axis = np.arange(num_frames)[:, None, None] / num_frames
        phase = 2 * np.pi * (rows + columns * (video + 1) / num_videos + time_axis)
        channels = [np.sin(phase + shift) for shift in (0, 2, 4)]
        frames = (127.5 + 100 * np.stack(channels, axis=-1)).astype(np.uint8)
        path = directory / f"class{video % 2}" / f"video{video:03d}.mp4"
        write_video(path, frames)
        samples.append((str(path), video % 2))
    return samples


def _bare_pyav_clip(path: str, indices: np.ndarray) -> dict[int, np.ndarray]:
    """The frames at `indices` with plain PyAV calls, by index (assumes timestamps start at 0:
    the decoding work is what is measured)."""
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


def _rate(function, num_clips: int) -> float:
    """Clips per second of one call of `function`."""
    start = time.perf_counter()
    function()
    return num_clips / (time.perf_counter() - start)


def bench_data(root: str | os.PathLike | None = None, split_dir: str | os.PathLike | None = None,
               format: str = "folder", fold: int = 1, *, num_items: int = 64,
               clip_frames: int = 16, num_clips: int = 1, stride: int = 1,
               synthetic_videos: int = 8, synthetic_frames: int = 96, synthetic_size: int = 112,
               seed: int = 0) -> dict:
    """Clips per second of bare PyAV, the dataset loader and the cached loader on the same windows.

    Uses the first `num_items` videos of the dataset at `root` (read as `format`), or, when root
    is None, `synthetic_videos` synthetic videos (repeated to `num_items` items). Returns the
    three rates, the loader / bare-PyAV ratio and the sizes used.
    """
    with tempfile.TemporaryDirectory(prefix="hdc-bench-data-") as scratch:
        if root is None:
            videos = _synthetic_dataset(Path(scratch) / "videos", synthetic_videos,
                                        synthetic_frames, synthetic_size)
        else:
            split = read_split(format, root, split_dir, fold)
            videos = [(os.path.join(root, path), label) for path, label in split.samples]
        samples = [videos[i % len(videos)] for i in range(num_items)]
        sampler = RandomClipSampler(clip_frames, stride, num_clips)
        loader = VideoDataset(samples, sampler, seed=seed)
        cached = VideoDataset(samples, sampler, seed=seed, cache_dir=Path(scratch) / "cache")
        windows = [(path, sampler(video_info(path).num_frames, loader.item_rng(index)))
                   for index, (path, _) in enumerate(samples)]
        total_clips = num_items * num_clips

        bare_rate = _rate(lambda: [_bare_pyav_clip(path, indices) for path, indices in windows],
                          total_clips)
        loader_rate = _rate(lambda: [loader[i] for i in range(num_items)], total_clips)
        for index in range(num_items):  # fill the cache
            cached[index]
        cached_rate = _rate(lambda: [cached[i] for i in range(num_items)], total_clips)
    return {"items": num_items, "clips": total_clips, "clip_frames": clip_frames,
            "bare_pyav_clips_per_s": bare_rate, "loader_clips_per_s": loader_rate,
            "cached_loader_clips_per_s": cached_rate, "loader_vs_bare": loader_rate / bare_rate}


def format_bench(result: dict) -> str:
    """A small table of `bench_data`'s result."""
    return "\n".join([
        f"{result['clips']} clips of {result['clip_frames']} frames",
        f"bare PyAV      {result['bare_pyav_clips_per_s']:9.1f} clips/s",
        f"loader         {result['loader_clips_per_s']:9.1f} clips/s  "
        f"({result['loader_vs_bare']:.2f} x bare PyAV; goal >= 0.8)",
        f"cached loader  {result['cached_loader_clips_per_s']:9.1f} clips/s",
    ])


def add_bench_parser(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `data` under `hdc bench`; the parsed args run with `args.func(args)`."""
    parser = bench_subparsers.add_parser(
        "data", help="clips/s of the dataset loader vs a bare PyAV loop",
        description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=None,
                        help="video root (default: synthetic videos in a temporary directory)")
    parser.add_argument("--splits", default=None, help="split-file directory")
    parser.add_argument("--format", choices=("ucf101", "hmdb51", "folder"), default="folder")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--items", type=int, default=64, help="dataset items to decode")
    parser.add_argument("--clip-frames", type=int, default=16)
    parser.set_defaults(func=run_bench)
    return parser


def run_bench(args: argparse.Namespace) -> int:
    """CLI body: run the benchmark and print the table."""
    print(format_bench(bench_data(args.root, args.splits, args.format, args.fold,
                                  num_items=args.items, clip_frames=args.clip_frames)))
    return 0
