"""Row 1, decode: the dataset loader (and its cached variant) against a bare PyAV loop over the
same windows; `hdc bench data ROOT` runs it on a real dataset."""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hdc_lib.bench.timing import interleaved_medians
from hdc_lib.data.datasets import VideoDataset
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.data.splits import read_split
from hdc_lib.data.video_io import video_info, write_video


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
