"""Clip samplers: which frames of a video make the clips of one dataset item.

A sampler is called as `sampler(num_video_frames, rng)` with a numpy Generator and returns an
int64 array (K, T) of frame indices: K clips (windows) of T frames, frame t of a window with
start s and stride d being s + t*d. Windows that run past the end loop the video (indices modulo
the frame count), so short videos never fail. `sampler.sample(num_video_frames, rng)` returns
the same indices together with whether any window looped (the dataset counts those items).
Everything random comes from `rng`, so a sampler is deterministic given the generator.
"""
from __future__ import annotations

import numpy as np


def _windows(starts: np.ndarray, strides: np.ndarray, num_frames: int,
             num_video_frames: int) -> tuple[np.ndarray, bool]:
    """Frame indices (K, T) of windows start + t*stride looped modulo the video's length, and
    whether any window ran past the end."""
    offsets = np.arange(num_frames, dtype=np.int64)
    unwrapped = starts[:, None] + strides[:, None] * offsets[None, :]
    return unwrapped % num_video_frames, bool(unwrapped.max() >= num_video_frames)


def _check(num_frames: int, num_clips: int, num_video_frames: int) -> None:
    if num_video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_video_frames}")
    if num_frames < 1 or num_clips < 1:
        raise ValueError(f"need num_frames >= 1 and num_clips >= 1, got {num_frames}, {num_clips}")


def _disjoint_starts(spans: np.ndarray, slack: int, rng: np.random.Generator) -> np.ndarray:
    """Starts of windows with these spans, laid end to end in a random order with `slack` spare
    frames spread over the K + 1 gaps, uniformly over all such layouts."""
    k = len(spans)
    # Stars and bars: K sorted distinct draws from slack + K positions, minus 0..K-1, are a
    # uniformly drawn non-decreasing sequence of K offsets in [0, slack].
    offsets = np.sort(rng.choice(slack + k, size=k, replace=False)) - np.arange(k)
    order = rng.permutation(k)  # which clip takes which slot, earliest first
    starts = np.empty(k, dtype=np.int64)
    starts[order] = offsets + np.concatenate([[0], np.cumsum(spans[order])[:-1]])
    return starts


class RandomClipSampler:
    """K random windows of `num_frames` frames, with distinct start frames when possible.

    `stride` is an int or a tuple of candidate strides; each clip draws one uniformly (the
    playback-speed knob). A window of stride d spans (T - 1) * d + 1 frames; its start is drawn
    uniformly among the starts where it fits, avoiding starts already taken by earlier clips of
    the item (DCLR's official sampler: two different windows, which may overlap). When the video
    is shorter than the window, any frame can start it and the window loops.

    `disjoint=True` (the coupled baseline and HDC; docs/methods.md, "Views": the windows overlap
    only when the video is too short): when the K spans fit in the video one after another, the
    windows are laid out without overlap, uniformly over all such layouts and in a random order;
    otherwise the rule above applies.

    `offset=(lo, hi)` instead sets how far apart the windows start: consecutive starts differ by a
    number of frames drawn uniformly from lo..hi (>= 1), the group placed uniformly where it fits
    and its windows given to the clips in a random order. Small offsets make overlapping windows
    whose only differences are a few frames of motion (a harder temporal task than two halves of
    the video, which position alone tells apart). When the group does not fit, the rule above.
    """

    def __init__(self, num_frames: int, stride: int | tuple[int, ...] = 1, num_clips: int = 1,
                 disjoint: bool = False, offset: tuple[int, int] | None = None):
        self.num_frames = num_frames
        self.strides = np.atleast_1d(np.asarray(stride, dtype=np.int64))
        self.num_clips = num_clips
        self.disjoint = disjoint
        self.offset = None if offset is None else tuple(int(v) for v in offset)
        if self.strides.ndim != 1 or (self.strides < 1).any():
            raise ValueError(f"strides must be positive integers, got {stride}")
        if self.offset is not None and (disjoint or len(self.offset) != 2
                                        or not 1 <= self.offset[0] <= self.offset[1]):
            raise ValueError(f"offset must be (lo, hi) with 1 <= lo <= hi, without disjoint; got {offset}")

    @property
    def span(self) -> int:
        """Frames the longest possible window covers; shorter videos may loop."""
        return (self.num_frames - 1) * int(self.strides.max()) + 1

    def __call__(self, num_video_frames: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample(num_video_frames, rng)[0]

    def sample(self, num_video_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """Frame indices (K, T) and whether any window looped."""
        _check(self.num_frames, self.num_clips, num_video_frames)
        strides = rng.choice(self.strides, size=self.num_clips)
        spans = (self.num_frames - 1) * strides + 1
        slack = num_video_frames - int(spans.sum())
        if self.disjoint and slack >= 0:
            return _windows(_disjoint_starts(spans, slack, rng), strides, self.num_frames, num_video_frames)
        if self.offset is not None:
            gaps = rng.integers(self.offset[0], self.offset[1] + 1, size=self.num_clips - 1)
            order = rng.permutation(self.num_clips)  # which clip takes which slot, earliest first
            relative = np.concatenate([[0], np.cumsum(gaps)])
            extent = int((relative + spans[order]).max())
            if extent <= num_video_frames:
                starts = np.empty(self.num_clips, dtype=np.int64)
                starts[order] = relative + rng.integers(0, num_video_frames - extent + 1)
                return _windows(starts, strides, self.num_frames, num_video_frames)
        starts = np.empty(self.num_clips, dtype=np.int64)
        for clip, stride in enumerate(strides):
            fitting = num_video_frames - (self.num_frames - 1) * int(stride)
            candidates = np.arange(fitting if fitting > 0 else num_video_frames)
            unused = np.setdiff1d(candidates, starts[:clip])
            starts[clip] = rng.choice(unused if unused.size else candidates)
        return _windows(starts, strides, self.num_frames, num_video_frames)

    def __repr__(self) -> str:
        return (f"RandomClipSampler(num_frames={self.num_frames}, "
                f"stride={tuple(self.strides.tolist())}, num_clips={self.num_clips}, disjoint={self.disjoint}, "
                f"offset={self.offset})")


class UniformClipSampler:
    """K evenly spaced windows (deterministic; the usual evaluation protocol).

    Starts are round(linspace(0, N - span, K)) when the window fits in the N-frame video, so the
    first window starts the video and the last one ends it; when it does not fit, the starts
    spread evenly over the frames (k * N // K) and every window loops.
    """

    def __init__(self, num_frames: int, stride: int = 1, num_clips: int = 10):
        if stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride}")
        self.num_frames = num_frames
        self.stride = stride
        self.num_clips = num_clips

    @property
    def span(self) -> int:
        """Frames one window covers; shorter videos loop."""
        return (self.num_frames - 1) * self.stride + 1

    def __call__(self, num_video_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.sample(num_video_frames, rng)[0]

    def sample(self, num_video_frames: int,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, bool]:
        """Frame indices (K, T) and whether the windows loop; `rng` is unused (deterministic)."""
        _check(self.num_frames, self.num_clips, num_video_frames)
        if num_video_frames >= self.span:
            starts = np.round(np.linspace(0, num_video_frames - self.span, self.num_clips))
        else:
            starts = np.arange(self.num_clips) * num_video_frames // self.num_clips
        strides = np.full(self.num_clips, self.stride, dtype=np.int64)
        return _windows(starts.astype(np.int64), strides, self.num_frames, num_video_frames)

    def __repr__(self) -> str:
        return (f"UniformClipSampler(num_frames={self.num_frames}, stride={self.stride}, "
                f"num_clips={self.num_clips})")
