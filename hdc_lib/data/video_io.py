"""Video files in and out, with PyAV (torchvision 0.29 no longer reads or writes video).

Frames are uint8 numpy arrays (T, H, W, C), RGB. Frame *indices* are 0-based positions in
presentation order, computed from each frame's timestamp:

    index = round((pts - origin) * time_base * fps)

where `origin` is the timestamp of the stream's first packet (our reading: `stream.start_time`
is not enough, e.g. H.264-in-AVI reports 0 while its first frame has pts 1). AVI stores no
presentation timestamps at all (FFmpeg guesses them, wrongly once there are B-frames), but it is
constant-rate with one decode timestamp per frame, so AVI frames are counted instead: the
keyframe a seek lands on is frame (dts - first dts) / ticks per frame, and the decoder's output
after it is in presentation order. Knowing the index of every decoded frame is what lets a
reader seek to the keyframe at or before a window, so a seek-decoded window equals the same
frames of a full decode exactly.

Every reader goes through one decode loop (`_gather`): seek to the keyframe at or before the
first wanted frame, decode forward, convert to RGB only the frames asked for, stop after the
last one. Anything that goes wrong (empty, truncated or non-video file, no decodable frame)
raises `VideoDecodeError` naming the file; raw PyAV exceptions never escape.

Every frame a reader returns has the size the container declares (`video_info`'s height and
width), so all clips of a video stack; a stream that changes size midway is an error, and so is
a declared size above MAX_FRAME_PIXELS: a few kilobytes with a forged header can otherwise
decode into gigabytes of concealed frames.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NoReturn, Sequence

import av
import numpy as np

from hdc_lib.errors import UserError

# Container metadata often over-counts by a frame or two (edit lists, a dropped trailing
# B-frame). Up to this many missing trailing frames repeat the last decoded frame; a larger
# shortfall means a damaged (truncated) video and is an error.
END_SLACK_FRAMES = 4

# Largest frame a reader decodes: 8K UHD (7680 x 4320), far beyond any video SSL dataset.
MAX_FRAME_PIXELS = 7680 * 4320


class VideoDecodeError(UserError, RuntimeError):
    """A video that cannot be read: carries the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(reason, path)

    def __reduce__(self):
        # Keep the two-argument constructor picklable (DataLoader workers send errors back).
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, read without decoding it."""

    num_frames: int
    fps: float
    height: int
    width: int


class _Video:
    """An open container, its first video stream and the numbers that map pts to indices."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise VideoDecodeError(self.path, "file not found")
        if os.path.getsize(self.path) == 0:
            raise VideoDecodeError(self.path, "empty file (0 bytes)")
        self.container = self._open()
        if not self.container.streams.video:
            self._refuse("no video stream")
        self.stream = self.container.streams.video[0]
        if self.stream.codec_context is None:
            self._refuse("no decoder for the video stream's codec")
        self.height, self.width = self.stream.height, self.stream.width
        if self.height * self.width > MAX_FRAME_PIXELS:
            self._refuse(f"declared frame size {self.width}x{self.height} is above the limit of "
                         f"{MAX_FRAME_PIXELS} pixels (MAX_FRAME_PIXELS)")
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        if not rate:
            self._refuse("no frame rate in the container")
        self.fps = Fraction(rate)
        self.time_base = self.stream.time_base
        # Timestamp ticks per frame, so index = (pts - origin) / ticks_per_frame.
        self.ticks_per_frame = 1 / (self.fps * self.time_base)
        self.counts_frames = self.container.format.name == "avi"

    def _open(self) -> av.container.InputContainer:
        try:
            # Metadata (titles, encoder tags) is never used; a corrupt, non-UTF-8 tag must not
            # make an otherwise decodable video unreadable (PyAV decodes tags strictly).
            return av.open(self.path, metadata_errors="replace")
        except av.FFmpegError as error:
            raise VideoDecodeError(self.path, f"not a readable container ({error})") from None

    def _refuse(self, reason: str) -> NoReturn:
        self.container.close()
        raise VideoDecodeError(self.path, reason)

    def __enter__(self) -> "_Video":
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def packets(self) -> Iterator[av.Packet]:
        """Demux the video stream, turning demuxer failures into VideoDecodeError."""
        try:
            yield from self.container.demux(self.stream)
        except av.FFmpegError as error:
            raise VideoDecodeError(self.path, f"demuxing failed ({error})") from None

    def frames(self, packets: Iterator[av.Packet]) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decode packets into (frame index, frame).

        Counted frames (AVI, or a frame without pts) follow the previous one; the count starts at
        the decode position of the first packet (its dts), which is a keyframe's own index.
        """
        index = None
        try:
            for packet in packets:
                if index is None:
                    index = self.decode_position(packet) - 1
                for frame in packet.decode():
                    if self.counts_frames or frame.pts is None:
                        index += 1
                    else:
                        index = round((frame.pts - self.origin_pts) / self.ticks_per_frame)
                    if (frame.height, frame.width) != (self.height, self.width):
                        raise VideoDecodeError(
                            self.path, f"frame {index} is {frame.width}x{frame.height} but the "
                                       f"video is {self.width}x{self.height} (size changes "
                                       "mid-stream)")
                    yield index, frame
        except av.FFmpegError as error:
            raise VideoDecodeError(self.path, f"decoding failed ({error})") from None

    def decode_position(self, packet: av.Packet) -> int:
        """Position of a packet in decode order, from its dts (0 when the container has none)."""
        if packet.dts is None or self.origin_dts is None:
            return 0
        return round((packet.dts - self.origin_dts) / self.ticks_per_frame)

    def frames_from(self, first: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded (index, frame) pairs starting at the keyframe at or before frame `first`."""
        packets = self.packets()
        head = next(packets, None)
        if head is None:
            raise VideoDecodeError(self.path, "no packets in the video stream")
        # The first packet's timestamps are frame 0's: indices count from them.
        self.origin_dts = head.dts
        self.origin_pts = head.pts if head.pts is not None else (head.dts or 0)
        if first > 0:
            target = self.origin_pts + int(first * self.ticks_per_frame)
            try:
                self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            except av.FFmpegError:
                pass  # unseekable: the check below restarts from the beginning
            else:
                frames = self.frames(self.packets())
                landed = next(frames, None)
                if landed is not None and landed[0] <= first and (
                        self.counts_frames or landed[1].pts is not None):
                    yield landed
                    yield from frames
                    return
            # The seek failed or landed past the window: decode from the beginning instead, in a
            # freshly opened container (a damaged index can make seeking back fail as well).
            self.container.close()
            self.container = self._open()
            self.stream = self.container.streams.video[0]
            packets = self.packets()
        else:
            packets = itertools.chain([head], packets)
        yield from self.frames(packets)


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size from the container metadata, without decoding.

    The frame count is `stream.frames` when the container records it (mp4, avi), else duration x
    fps (mkv, webm: stream duration, or the container's); only when neither is known are the
    packets counted by demuxing (still no decoding).
    """
    with _Video(path) as video:
        stream = video.stream
        num_frames = stream.frames
        if not num_frames and stream.duration:
            num_frames = round(stream.duration * video.time_base * video.fps)
        if not num_frames and video.container.duration:
            num_frames = round(Fraction(video.container.duration, av.time_base) * video.fps)
        if not num_frames:
            num_frames = sum(1 for packet in video.packets() if packet.size > 0)
        if not num_frames:
            raise VideoDecodeError(path, "the video stream has no frames")
        # Every frame takes at least a byte: a larger count is a damaged header, which would
        # otherwise have clip samplers and the cache index billions of frames.
        if num_frames > os.path.getsize(path):
            raise VideoDecodeError(path, f"the container claims {num_frames} frames in a "
                                         f"{os.path.getsize(path)}-byte file (damaged header)")
        return VideoInfo(int(num_frames), float(video.fps), video.height, video.width)


def verify_video(path: str | os.PathLike) -> VideoInfo:
    """Decode every frame (without converting any) and check the stream delivers what the
    container promises; the VideoInfo, or VideoDecodeError naming the first problem.

    This is what makes `hdc data check --full` find damage in the middle of a video, which
    reading a few frames cannot.
    """
    info = video_info(path)
    last_index = -1
    with _Video(path) as video:
        for last_index, _ in video.frames_from(0):
            pass
    if last_index < 0:
        raise VideoDecodeError(path, "no decodable frames")
    if info.num_frames - 1 - last_index > END_SLACK_FRAMES:
        raise VideoDecodeError(path, f"decoding stops at frame {last_index} of "
                                     f"{info.num_frames} (truncated or damaged video)")
    return info


def read_frames(path: str | os.PathLike, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Frames at arbitrary indices (any order, repeats allowed): uint8 (len(indices), H, W, C).

    The span min(indices)..max(indices) is decoded once (one seek) and the frames are gathered.
    Indices must lie in the video (0 <= i < num_frames); `read_clip` does the looping.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("read_frames needs at least one frame index")
    if indices.min() < 0:
        raise ValueError(f"negative frame index {indices.min()} for {path}")
    wanted = np.unique(indices)
    frames = _gather(path, wanted)
    return np.stack([frames[i] for i in indices.tolist()])


def read_clip(path: str | os.PathLike, start: int, num_frames: int, stride: int = 1,
              total_frames: int | None = None) -> np.ndarray:
    """The window start, start+stride, ... (num_frames frames): uint8 (T, H, W, C).

    A window running past the end loops the video: frame indices are taken modulo the video's
    frame count (`total_frames`, read from the metadata when not given), so short videos never
    fail; the frames after the wrap come from the start of the video.
    """
    if total_frames is None:
        total_frames = video_info(path).num_frames
    indices = (start + stride * np.arange(num_frames)) % total_frames
    return read_frames(path, indices)


def _gather(path: str | os.PathLike, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """The decode loop: RGB arrays for the sorted, unique frame indices `wanted`.

    A wanted index with no frame of its own (variable frame rate) gets the latest frame before
    it; up to END_SLACK_FRAMES indices past the last decoded frame repeat that frame; a larger
    shortfall or a video with no decodable frame raises VideoDecodeError.
    """
    found: dict[int, np.ndarray] = {}
    position = 0  # wanted[position] is the next index to fill
    previous, last_index = None, -1  # last decoded frame and its index
    with _Video(path) as video:
        for index, frame in video.frames_from(int(wanted[0])):
            if previous is not None and position < len(wanted) and wanted[position] < index:
                held = previous.to_ndarray(format="rgb24")  # a gap in the timestamps
                while position < len(wanted) and wanted[position] < index:
                    found[int(wanted[position])] = held
                    position += 1
            if position < len(wanted) and wanted[position] <= index:
                array = frame.to_ndarray(format="rgb24")
                while position < len(wanted) and wanted[position] <= index:
                    found[int(wanted[position])] = array
                    position += 1
            previous, last_index = frame, index
            if position == len(wanted):
                return found
    if previous is None:
        raise VideoDecodeError(path, "no decodable frames")
    missing = wanted[position:]
    if missing[-1] - last_index > END_SLACK_FRAMES:
        raise VideoDecodeError(
            path, f"frame {int(missing[-1])} requested but decoding stops at frame {last_index} "
                  "(truncated or damaged video)")
    tail = previous.to_ndarray(format="rgb24")
    found.update((int(i), tail) for i in missing)
    return found


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25, *, crf: int = 12,
                keyframe_interval: int = 16, pix_fmt: str = "yuv420p") -> None:
    """Write uint8 (T, H, W, C) RGB frames as H.264 (libx264); the extension picks the container.

    Defaults keep a round trip close (crf 12: mean absolute error of a few grey levels on
    natural-looking content) and put a keyframe every `keyframe_interval` frames so readers can
    seek into the video. yuv420p (the format every player reads) needs even height and width:
    odd sizes raise ValueError; pass pix_fmt="yuv444p" to write them (any size, 1x1 included).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video expects uint8 (T, H, W, 3) frames, got {frames.dtype} "
                         f"{frames.shape}")
    num_frames, height, width, _ = frames.shape
    if num_frames == 0:
        raise ValueError(f"write_video got no frames for {path}")
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"{path}: yuv420p needs even sizes, got {height}x{width}; crop, pad or "
                         "pass pix_fmt='yuv444p'")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # mbtree=0: with x264's macroblock-tree rate control the same frames encode to different
        # bytes (and decoded pixels) from one process to the next; without it they never do.
        stream.options = {"crf": str(crf), "g": str(keyframe_interval),
                          "keyint_min": str(keyframe_interval), "sc_threshold": "0",
                          "x264-params": "mbtree=0"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
