"""PyAV reading and writing: round trips, exact seek windows, looping and bad files."""
import io
import pickle

import av
import numpy as np
import pytest

from hdc_lib.data.video_io import (VideoDecodeError, VideoInfo, read_clip, read_frames,
                                   video_info, write_video)


def keyframe_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(packet.is_keyframe for packet in container.demux(video=0))


@pytest.mark.parametrize("extension", [".mp4", ".mkv", ".avi"])
def test_round_trip_is_close_and_info_is_read_from_metadata(tmp_path, synthetic_video_writer,
                                                            extension):
    path = tmp_path / f"clip{extension}"
    written = synthetic_video_writer(path, num_frames=24, height=32, width=48)
    assert video_info(path) == VideoInfo(num_frames=24, fps=25.0, height=32, width=48)
    decoded = read_frames(path, range(24))
    assert decoded.shape == (24, 32, 48, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - written).mean() < 3  # lossy codec, but tight
    # Frame t decodes as frame t (blue level 10 t + 5), not a neighbour.
    assert np.abs(decoded[..., 2].mean(axis=(1, 2)) - (10 * np.arange(24) + 5)).max() < 3


@pytest.mark.parametrize("extension", [".mp4", ".mkv", ".avi"])
def test_seek_decoded_windows_equal_the_full_decode_exactly(tmp_path, synthetic_video_writer,
                                                            extension):
    path = tmp_path / f"clip{extension}"
    synthetic_video_writer(path, num_frames=24)
    assert keyframe_count(path) == 5  # keyframes at 0, 5, 10, 15, 20: windows really seek
    full = read_frames(path, range(24))
    for start in range(24):
        for stride in (1, 3):
            expected = full[(start + stride * np.arange(6)) % 24]
            np.testing.assert_array_equal(read_clip(path, start, 6, stride), expected)


def test_read_frames_takes_any_order_and_repeats(video_file):
    path, _ = video_file
    full = read_frames(path, range(24))
    indices = [23, 3, 3, 17, 0, 9, 23]
    np.testing.assert_array_equal(read_frames(path, indices), full[indices])


def test_read_clip_loops_past_the_end(video_file):
    path, _ = video_file
    full = read_frames(path, range(24))
    np.testing.assert_array_equal(read_clip(path, 20, 10), full[[20, 21, 22, 23, 0, 1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(read_clip(path, 22, 3, stride=24), full[[22, 22, 22]])


def test_one_frame_video_loops(tmp_path, synthetic_video_writer):
    path = tmp_path / "still.mp4"
    written = synthetic_video_writer(path, num_frames=1)
    assert video_info(path).num_frames == 1
    clip = read_clip(path, 0, 8)
    assert clip.shape == (8, 32, 48, 3)
    assert (clip == clip[0]).all() and np.abs(clip[0].astype(int) - written[0]).mean() < 3


@pytest.mark.parametrize("height, width", [(1, 1), (7, 9)])
def test_odd_sizes_need_yuv444p(tmp_path, synthetic_video_writer, height, width):
    with pytest.raises(ValueError, match="even"):
        synthetic_video_writer(tmp_path / "odd420.mp4", num_frames=3, height=height, width=width)
    path = tmp_path / "odd444.mp4"
    written = synthetic_video_writer(path, num_frames=3, height=height, width=width,
                                     pix_fmt="yuv444p")
    assert video_info(path) == VideoInfo(3, 25.0, height, width)
    assert np.abs(read_clip(path, 0, 3).astype(int) - written).mean() < 4


def test_frame_count_falls_back_to_counting_packets(tmp_path):
    """A Matroska file written to a non-seekable stream records no frame count or duration."""
    class Unseekable:
        def __init__(self):
            self.buffer = io.BytesIO()

        def write(self, data):
            return self.buffer.write(data)

    sink = Unseekable()
    with av.open(sink, "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for t in range(11):
            frame = np.full((32, 32, 3), 20 * t, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    path = tmp_path / "unindexed.mkv"
    path.write_bytes(sink.buffer.getvalue())
    with av.open(str(path)) as container:  # the metadata really knows nothing
        assert container.streams.video[0].frames == 0 and container.duration is None
    assert video_info(path).num_frames == 11
    assert read_frames(path, [10]).mean() == pytest.approx(200, abs=3)


def test_write_video_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", np.zeros((0, 8, 8, 3), np.uint8))


# How each kind of broken file is made from a good mp4's bytes (None: no file at all).
BROKEN_FILES = {"empty": lambda good: b"", "text": lambda good: b"this is not a video\n" * 20,
                "truncated": lambda good: good[: len(good) // 2], "missing": None}


@pytest.mark.parametrize("kind, reason", [("empty", "empty file"), ("text", "not a readable"),
                                          ("truncated", "not a readable"),
                                          ("missing", "not found")])
def test_bad_files_raise_a_clear_error_naming_the_file(tmp_path, video_file, kind, reason):
    path = tmp_path / f"{kind}.mp4"
    if BROKEN_FILES[kind] is not None:
        path.write_bytes(BROKEN_FILES[kind](video_file[0].read_bytes()))
    for read in (lambda: video_info(path), lambda: read_clip(path, 0, 4),
                 lambda: read_frames(path, [3])):
        with pytest.raises(VideoDecodeError, match=reason) as caught:
            read()
        assert caught.value.path == str(path) and str(path) in str(caught.value)


def test_truncated_stream_with_intact_header_fails_past_the_cut(tmp_path, synthetic_video_writer):
    """Matroska keeps its header at the front: a cut file opens, but its tail is gone."""
    good = tmp_path / "good.mkv"
    synthetic_video_writer(good, num_frames=24)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert video_info(cut).num_frames == 24  # the header still promises every frame
    assert read_clip(cut, 0, 2).shape == (2, 32, 48, 3)
    with pytest.raises(VideoDecodeError, match="truncated") as caught:
        read_clip(cut, 20, 4)
    assert str(cut) in str(caught.value)


def test_header_without_frames_is_an_error(tmp_path, synthetic_video_writer):
    good = tmp_path / "good.mkv"
    synthetic_video_writer(good, num_frames=24)
    with av.open(str(good)) as container:
        first_packet = next(container.demux(video=0))
        header_size = first_packet.pos  # bytes before the first frame's data
    headless = tmp_path / "header_only.mkv"
    headless.write_bytes(good.read_bytes()[:header_size])
    with pytest.raises(VideoDecodeError, match="no decodable frames"):
        read_frames(headless, [0])


def test_decode_error_pickles():
    error = pickle.loads(pickle.dumps(VideoDecodeError("a/b.mp4", "empty file")))
    assert (error.path, error.reason) == ("a/b.mp4", "empty file") and "a/b.mp4" in str(error)
