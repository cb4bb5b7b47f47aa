"""Map-style video datasets: UCF101, HMDB51, Kinetics-style folders, on one `VideoDataset` base.

An item is a dict:
  video    uint8 tensor (K, T, H, W, C): the K clips the clip sampler picked (always with K);
  label    int, 0-based (-1 when unknown);
  index    int, the position of the video the item actually comes from;
  path     str, that video's file;
  looped   bool, whether a clip wrapped around the end of a short video;
  skipped  int, how many unreadable videos were passed over to produce it (on_error="skip").
PyTorch's default collate batches these (video becomes (B, K, T, H, W, C)), so no custom
collate is needed.

Determinism: item `index` draws its clips from a numpy Generator seeded by (seed, epoch, index),
so the same item is the same whatever the worker, order or restart; `set_epoch` changes the
draw each epoch. (With DataLoader workers, call set_epoch before iterating and keep
persistent_workers=False, so the workers get the new epoch.)

Unreadable videos: on_error="raise" lets the VideoDecodeError (naming the file) through;
on_error="skip" logs a warning naming the file and reason once, records it in `stats`, and
returns the next readable video (index + 1, + 2, ... wrapping), with that video's own label,
index and path, so a DataLoader never stops mid-epoch and labels never shift. `stats` counts in
the process that loads, so with DataLoader workers the main process's copy stays at zero: sum
the items' `looped` and `skipped` fields instead.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .cache import DecodedVideoCache, file_version
from .splits import read_hmdb51_split, read_ucf101_split, read_video_folder
from .video_io import VideoDecodeError, read_frames, video_info

logger = logging.getLogger(__name__)

# Frames resized per interpolate call: bounds the float32 copy when a whole video is cached.
_RESIZE_CHUNK = 64


@dataclass
class LoadStats:
    """What loading has met so far (in this process)."""

    decoded: int = 0  # items decoded from their video file
    cached: int = 0  # items gathered from the decoded-video cache without decoding
    looped: int = 0  # items with a clip that wrapped around the end of the video
    skipped: int = 0  # requests that landed on an unreadable video and moved on
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize uint8 (N, H, W, C) frames so min(H, W) == short_side, keeping the aspect ratio."""
    height, width = frames.shape[1:3]
    scale = short_side / min(height, width)
    return resize_frames(frames, (max(1, round(height * scale)), max(1, round(width * scale))))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 (N, H, W, C) frames to exactly `size` = (height, width).

    Bilinear with antialiasing (torch.nn.functional.interpolate), rounded back to uint8.
    """
    size = tuple(size)
    if size == frames.shape[1:3]:
        return frames
    resized = []
    for chunk in torch.from_numpy(np.ascontiguousarray(frames)).split(_RESIZE_CHUNK):
        images = chunk.permute(0, 3, 1, 2).float()
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True,
                               align_corners=False)
        resized.append(images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(resized).contiguous().numpy()


class VideoDataset(Dataset):
    """Clips of a list of (video path, label), decoded with PyAV.

    samples: (path, label) pairs, paths relative to `root` when it is given.
    clip_sampler: a sampler from `samplers` (anything with `sample(num_frames, rng) ->
        (indices (K, T), looped)`).
    short_side: resize decoded frames so their shorter side has this many pixels (None: keep).
    frame_size: resize decoded frames to exactly (height, width) instead; videos of different
        sizes (Kinetics, HMDB51) then batch together.
    seed: with the epoch and the index, seeds each item's clip draw.
    on_error: "raise" or "skip" (see the module docstring).
    cache_dir: keep whole decoded (resized) videos there and gather clips from them.
    """

    def __init__(self, samples: Sequence[tuple[str | os.PathLike, int]], clip_sampler, *,
                 root: str | os.PathLike | None = None, classes: Sequence[str] | None = None,
                 short_side: int | None = None, frame_size: tuple[int, int] | None = None,
                 seed: int = 0, on_error: str = "raise",
                 cache_dir: str | os.PathLike | None = None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if short_side is not None and frame_size is not None:
            raise ValueError("give short_side or frame_size, not both")
        base = Path(root) if root is not None else Path()
        self.samples = [(str(base / path), int(label)) for path, label in samples]
        self.classes = list(classes) if classes is not None else None
        self.clip_sampler = clip_sampler
        self.short_side = short_side
        self.frame_size = tuple(frame_size) if frame_size is not None else None
        self.seed = seed
        self.epoch = 0
        self.on_error = on_error
        self.cache = DecodedVideoCache(cache_dir) if cache_dir is not None else None
        self.stats = LoadStats()
        self._frame_counts: dict[str, tuple[tuple[int, int], int]] = {}  # path -> (size, mtime), frames

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def item_rng(self, index: int) -> np.random.Generator:
        """The generator item `index` draws its clips from in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    @property
    def decode_settings(self) -> dict:
        """Everything that changes the decoded frames (part of the cache key)."""
        return {"short_side": self.short_side, "frame_size": self.frame_size, "pixel_format": "rgb24"}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} videos")
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            path = self.samples[candidate][0]
            if path in self.stats.unreadable:
                continue
            try:
                item = self._load(candidate)
            except VideoDecodeError as error:
                if self.on_error == "raise":
                    raise
                logger.warning("skipping unreadable video %s: %s", error.path, error.reason)
                self.stats.unreadable[path] = error.reason
                continue
            item["skipped"] = offset
            self.stats.skipped += offset
            return item
        raise RuntimeError(f"none of the {len(self)} videos is readable; first reasons: "
                           f"{dict(list(self.stats.unreadable.items())[:3])}")

    def _load(self, index: int) -> dict:
        """Item `index`: sample clip indices, then gather them (from the cache or by decoding)."""
        path, label = self.samples[index]
        rng = self.item_rng(index)
        if self.cache is None:
            indices, looped = self.clip_sampler.sample(self._num_frames(path), rng)
            # Decode each distinct frame once, then lay the frames out as (K, T).
            distinct, layout = np.unique(indices, return_inverse=True)
            video = self._decode(path, distinct)[layout.reshape(indices.shape)]
            self.stats.decoded += 1
        else:
            frames, hit = self._cached_frames(path)
            indices, looped = self.clip_sampler.sample(len(frames), rng)
            video = frames[indices]
            self.stats.cached += hit
            self.stats.decoded += not hit
        self.stats.looped += looped
        return {"video": torch.from_numpy(np.ascontiguousarray(video)), "label": label,
                "index": index, "path": path, "looped": looped}

    def _num_frames(self, path: str) -> int:
        """The video's frame count, read from its metadata once per file version: opening the
        container only for it costs about 6% of decoding a 16-frame clip, every epoch."""
        try:
            version = file_version(path)
        except FileNotFoundError:
            raise VideoDecodeError(path, "file not found") from None
        known = self._frame_counts.get(path)
        if known is None or known[0] != version:
            known = self._frame_counts[path] = (version, video_info(path).num_frames)
        return known[1]

    def _decode(self, path: str, indices: np.ndarray) -> np.ndarray:
        """Frames at `indices`, resized to the dataset's short side."""
        frames = read_frames(path, indices)
        if self.frame_size is not None:
            return resize_frames(frames, self.frame_size)
        return frames if self.short_side is None else resize_short_side(frames, self.short_side)

    def _cached_frames(self, path: str) -> tuple[np.ndarray, bool]:
        """The whole decoded video from the cache (decoded and stored on a miss)."""
        def decode_whole_video() -> np.ndarray:
            return self._decode(path, np.arange(video_info(path).num_frames))

        try:
            return self.cache.load(path, self.decode_settings, decode_whole_video)
        except FileNotFoundError:  # the cache key reads the file's size and mtime
            raise VideoDecodeError(path, "file not found") from None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} videos, classes="
                f"{len(self.classes) if self.classes is not None else None}, "
                f"sampler={self.clip_sampler!r}, short_side={self.short_side}, "
                f"frame_size={self.frame_size}, "
                f"cache={self.cache.cache_dir if self.cache else None})")


class OfficialSplitDataset(VideoDataset):
    """A dataset read from its official split files by `read_split(split_dir, fold, train,
    video_root, check_counts)`; other keyword options are VideoDataset's."""

    read_split = None  # set by each dataset below

    def __init__(self, video_root: str | os.PathLike, split_dir: str | os.PathLike,
                 fold: int = 1, train: bool = True, *, clip_sampler,
                 check_counts: bool = False, **options):
        split = type(self).read_split(split_dir, fold, train, video_root, check_counts)
        super().__init__(split.samples, clip_sampler, root=video_root, classes=split.classes,
                         **options)


class UCF101(OfficialSplitDataset):
    """UCF101 read from the official split files (see `splits.read_ucf101_split`).

    check_counts=True verifies the official split size (split 1: 9,537 train / 3,783 test).
    """

    read_split = staticmethod(read_ucf101_split)


class HMDB51(OfficialSplitDataset):
    """HMDB51 read from the official split files (see `splits.read_hmdb51_split`).

    check_counts=True verifies the official split size (3,570 train / 1,530 test).
    """

    read_split = staticmethod(read_hmdb51_split)


class VideoFolder(VideoDataset):
    """Kinetics-style `<root>/<class>/<video>` folders: classes sorted, labels 0-based."""

    def __init__(self, root: str | os.PathLike, *, clip_sampler, **options):
        split = read_video_folder(root)
        super().__init__(split.samples, clip_sampler, root=root, classes=split.classes,
                         **options)
