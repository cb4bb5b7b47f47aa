"""`hdc data check`: find every video of a dataset that will not load, before training does.

Each listed video (train and test of the fold, or every video of a folder dataset) is opened,
its metadata read, its first frames and its last frame decoded (the last one catches truncated
files whose header still promises every frame). `--full` decodes every frame as well, which also
finds damage in the middle of a video (slower: a whole decoding pass over the dataset). The report
lists every unreadable video with its reason, and counts the readable ones and those shorter than
a training item needs (`frames_needed`: whose clips will loop or overlap).

What a training item needs comes from a run config (`hdc data check --config FILE`; the command is
wired in cli.py, which builds the config's method): the paper presets take two windows of 16
frames at stride 2 (31 frames each), laid end to end by the coupled baseline and HDC (62 frames)
and allowed to overlap by DCLR (32 raw frames each).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hdc_lib.errors import UserError

from .splits import DiskLookup, read_split
from .video_io import VideoDecodeError, read_frames, verify_video, video_info

# Frames decoded at the start of each video.
_PROBE_FRAMES = 2
# Frames a video needs when no config says: one 16-frame clip at stride 1.
DEFAULT_MIN_FRAMES = 16


def frames_needed(request: dict) -> int:
    """Frames a video needs for a training item of `request` (a method's `clip_request()`, the
    arguments of `RandomClipSampler`) to be drawn without looping: one window spans
    (T - 1) * d + 1 frames at the largest stride d; K disjoint windows need K spans, K windows
    `offset` = (lo, hi) apart need a span plus (K - 1) * hi; windows that may overlap need one span."""
    span = (request["num_frames"] - 1) * max(np.atleast_1d(request.get("stride", 1))) + 1
    clips = request.get("num_clips", 1)
    if request.get("disjoint"):
        return int(clips * span)
    if request.get("offset") is not None:
        return int(span + (clips - 1) * request["offset"][1])
    return int(span)


@dataclass
class CheckReport:
    """Outcome of `check_dataset`."""

    total: int = 0
    readable: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    short: list[tuple[str, int]] = field(default_factory=list)  # (path, frames) below min_frames
    min_frames: int = 0

    @property
    def ok(self) -> bool:
        return not self.unreadable

    def summary(self) -> str:
        lines = [f"unreadable: {path}: {reason}" for path, reason in self.unreadable]
        lines.append(f"{self.total} videos: {self.readable} readable, {len(self.unreadable)} "
                     f"unreadable, {len(self.short)} shorter than {self.min_frames} frames "
                     "(their clips will loop or overlap)")
        return "\n".join(lines)


def detect_format(split_dir: str | os.PathLike | None) -> str:
    """The split format: ucf101 (classInd.txt), hmdb51 (*_test_split*.txt), folder (no splits)."""
    if split_dir is None:
        return "folder"
    if (Path(split_dir) / "classInd.txt").is_file():
        return "ucf101"
    if any(Path(split_dir).glob("*_test_split*.txt")):
        return "hmdb51"
    raise UserError("cannot tell the split format: no classInd.txt (UCF101) and no "
                    "*_test_split<N>.txt (HMDB51); pass --format", split_dir)


def check_dataset(root: str | os.PathLike, split_dir: str | os.PathLike | None = None,
                  format: str | None = None, fold: int = 1, min_frames: int = 16,
                  progress: bool = False, full: bool = False) -> CheckReport:
    """Try every video of the dataset (both halves of the fold) and report what fails and why.

    Split-file problems (malformed lines, unknown classes) still raise SplitFileError; videos
    listed but missing on disk are reported like any other unreadable video.
    """
    format = format or detect_format(split_dir)
    listed: dict[str, None] = {}  # ordered and without duplicates
    for train in ((True, False) if format != "folder" else (True,)):
        split = read_split(format, root, split_dir, fold, train, check_files=False)
        listed.update((path, None) for path, _ in split.samples)
    disk = DiskLookup(root)
    report = CheckReport(total=len(listed), min_frames=min_frames)
    for relative in tqdm(listed, desc="checking videos", disable=not progress, unit="video"):
        found = disk.find(relative)
        path = os.path.join(root, found or relative)
        try:
            if found is None:
                raise VideoDecodeError(path, "listed in the split files but not found on disk")
            num_frames = (verify_video(path) if full else video_info(path)).num_frames
            read_frames(path, range(min(_PROBE_FRAMES, num_frames)))
            read_frames(path, [num_frames - 1])
        except VideoDecodeError as error:
            report.unreadable.append((path, error.reason))
            continue
        report.readable += 1
        if num_frames < min_frames:
            report.short.append((path, num_frames))
    return report


def add_check_parser(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `check` under `hdc data`; the parsed args run with `args.func(args)`."""
    parser = data_subparsers.add_parser(
        "check", help="report every unreadable or too-short video of a dataset",
        description=__doc__.splitlines()[0])
    parser.add_argument("root", help="video root (UCF101/HMDB51 class folders, or <class>/*.mp4)")
    parser.add_argument("--splits", default=None,
                        help="split-file directory (omit for a plain class-folder dataset)")
    parser.add_argument("--format", choices=("ucf101", "hmdb51", "folder"), default=None,
                        help="split format (default: detected from the split directory)")
    parser.add_argument("--fold", type=int, default=1, help="official split number (1-3)")
    parser.add_argument("--config", help="a run config (e.g. configs/ucf101/hdc_r2plus1d.yaml): "
                        "--min-frames defaults to what its training items need")
    parser.add_argument("--min-frames", type=int, default=None,
                        help="videos shorter than this are counted as 'will loop' (default: what "
                             f"--config needs, else {DEFAULT_MIN_FRAMES})")
    parser.add_argument("--full", action="store_true",
                        help="decode every frame, not only the first and last ones (slower; "
                             "also finds damage in the middle of a video)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_check)
    return parser


def run_check(args: argparse.Namespace) -> int:
    """CLI body: print the report; exit code 1 when any video is unreadable. `args.min_frames`
    None: the default (cli.py sets it from --config first)."""
    min_frames = DEFAULT_MIN_FRAMES if args.min_frames is None else args.min_frames
    report = check_dataset(args.root, args.splits, args.format, args.fold, min_frames,
                           progress=not args.no_progress, full=args.full)
    print(report.summary())
    return 0 if report.ok else 1
