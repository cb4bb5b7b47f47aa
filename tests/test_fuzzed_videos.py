"""Fuzzed videos: the loader reads or reports every broken file, never crashes, never shifts labels.

One corpus (built once per module) of files made from valid 12-frame videos: empty, text,
truncated at several points, bytes flipped in the header (the mp4 `moov` box) and in the payload
(`mdat`) with fixed seeds, forged headers (a huge frame size, a huge frame count, a broken keyframe
index, a non-UTF-8 tag, a frame size that changes mid-stream), and unusual but valid videos
(1 frame, 1x1, grayscale, 4:4:4, variable frame rate). Each file sits in its own class folder, so
the VideoFolder label of an item says which file it came from.

Clips are 12 frames long, so every item decodes its whole video: the loader then meets every
damaged frame, and `hdc data check --full` (which decodes every frame) must report exactly the
files the loader skipped. For the files whose outcome is certain by construction the test says
which way it goes; for the random flips it asserts the invariant: each file either yields a
correctly shaped uint8 clip with its own label, or is reported with a reason.
"""
import io
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import make_video_frames, write_test_video
from hdc_lib.cli import main
from hdc_lib.data.check import check_dataset
from hdc_lib.data.datasets import VideoDataset, VideoFolder
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.data.video_io import VideoDecodeError, read_clip, read_frames, video_info

FRAMES, SIZE = 12, 32
FLIP_SEEDS = range(12)  # corpus files per flip kind (header, payload)
FLIPS_PER_FILE = 4

# Files that cannot load, by construction, and a phrase their reason must contain ("" = any).
UNREADABLE = {
    "empty": "empty file (0 bytes)",
    "text_renamed_mp4": "not a readable container",
    "mp4_cut_inside_ftyp": "",
    "mp4_cut_mid_payload": "",  # the index (moov) comes after the payload: all of it is lost
    "mp4_cut_before_index": "",
    "mkv_cut_at_frame_6": "truncated",  # header intact, 6 of 12 frames lost
    "huge_frame_size_in_sps": "above the limit",  # 8192x8192 declared, 32x32 slices
    "huge_frame_count_in_stts": "damaged header",  # 10^8 frames declared in 3 kB
    "frame_size_changes_midway": "size changes mid-stream",
}
# Unusual files that must load (their clips have the size video_info reports).
READABLE = ["valid", "one_frame", "one_by_one_yuv444", "yuv444", "grayscale",
            "variable_frame_rate", "mkv_cut_at_last_frame", "huge_frame_size_in_mp4_boxes",
            "broken_keyframe_index", "raw_h264_stream", "non_utf8_metadata_tag"]


def mp4_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    """(start, end) byte offsets of each top-level box of an mp4 file."""
    boxes, offset = {}, 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        boxes[data[offset + 4:offset + 8].decode()] = (offset, offset + size)
        offset += size
    return boxes


def patch_box_field(data: bytes, box: bytes, offset: int, value: int, width: int = 4) -> bytes:
    """`data` with a big-endian field set: the one `offset` bytes after the type tag of the first
    `box` inside the moov box (the header; `avc1` also appears among the ftyp brands)."""
    patched = bytearray(data)
    at = data.index(box, data.index(b"moov")) + offset
    patched[at:at + width] = value.to_bytes(width, "big")
    return bytes(patched)


def flip_bytes(data: bytes, start: int, end: int, seed: int) -> bytes:
    """`data` with FLIPS_PER_FILE distinct bytes of [start, end) XORed with random non-zero
    values."""
    rng = np.random.default_rng(seed)
    flipped = bytearray(data)
    for position in rng.choice(np.arange(start, end), size=FLIPS_PER_FILE, replace=False):
        flipped[position] ^= int(rng.integers(1, 256))
    return bytes(flipped)


def packet_positions(path: Path) -> list[int]:
    """Byte offset of each video packet in the file."""
    with av.open(str(path)) as container:
        return [packet.pos for packet in container.demux(video=0) if packet.size]


def annex_b(frames: np.ndarray) -> bytes:
    """Raw H.264 (Annex B: start codes, in-band SPS/PPS) of uint8 RGB frames."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt, stream.options = "yuv420p", {"x264-params": "mbtree=0"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def _read_ue(bits: str, position: int) -> tuple[int, int]:
    """An unsigned Exp-Golomb value starting at `position`, and the position after it."""
    zeros = bits.index("1", position) - position
    end = position + 2 * zeros + 1
    return int(bits[position + zeros:end], 2) - 1, end


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def declare_frame_size(sps: bytes, width: int, height: int) -> bytes:
    """An x264 SPS NAL unit rewritten to declare width x height (multiples of 16) frames.

    Walks the SPS syntax (H.264 7.3.2.1.1; High profile without scaling matrices) up to
    pic_width_in_mbs_minus1 and re-encodes the two size fields; the rest is kept bit for bit.
    """
    rbsp = sps[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # drop emulation prevention
    bits = "".join(f"{byte:08b}" for byte in rbsp)
    _, position = _read_ue(bits, 24)  # after profile, constraint flags, level: the SPS id
    if rbsp[0] in (100, 110, 122, 244):  # High profiles: chroma format and bit depths
        chroma_format, position = _read_ue(bits, position)
        position += chroma_format == 3  # separate_colour_plane_flag
        position = _read_ue(bits, _read_ue(bits, position)[1])[1] + 1  # depths, bypass flag
        assert bits[position] == "0", "an SPS with scaling matrices"
        position += 1
    position = _read_ue(bits, position)[1]  # log2_max_frame_num_minus4
    order_type, position = _read_ue(bits, position)
    assert order_type in (0, 2), "pic_order_cnt_type 1"
    if order_type == 0:
        position = _read_ue(bits, position)[1]
    position = _read_ue(bits, position)[1] + 1  # max_num_ref_frames, gaps flag
    size_end = _read_ue(bits, _read_ue(bits, position)[1])[1]
    body = bits[:position] + _ue(width // 16 - 1) + _ue(height // 16 - 1)
    body += bits[size_end:].rstrip("0")  # ends with the stop bit; re-pad to a byte
    body += "0" * (-len(body) % 8)
    rbsp = bytes(int(body[i:i + 8], 2) for i in range(0, len(body), 8))
    return sps[:1] + re.sub(b"\x00\x00(?=[\x00-\x03])", b"\x00\x00\x03", rbsp)


def with_frame_size(stream: bytes, width: int, height: int) -> bytes:
    """An Annex B stream whose every SPS declares width x height."""
    units = [unit for unit in re.split(b"\x00?\x00\x00\x01", stream) if unit]
    return b"".join(b"\x00\x00\x00\x01" + (declare_frame_size(unit, width, height)
                                           if unit[0] & 0x1F == 7 else unit) for unit in units)


def write_variable_frame_rate(path: Path) -> None:
    """12 frames at irregular times (gaps of 40 to 280 ms), millisecond timestamps."""
    times_ms = [0, 40, 80, 200, 240, 280, 500, 540, 580, 620, 900, 940]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = SIZE
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"x264-params": "mbtree=0"}
        for array, time_ms in zip(make_video_frames(FRAMES, SIZE, SIZE), times_ms):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = time_ms, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@dataclass
class Corpus:
    root: Path
    names: list[str]  # every file's class folder, in label order

    def path(self, name: str) -> str:
        return str(self.root / name / "video.mp4")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("fuzzed")
    sources = tmp_path_factory.mktemp("sources")
    files: dict[str, bytes] = {}

    def written(name: str, num_frames=FRAMES, height=SIZE, width=SIZE, **options) -> bytes:
        write_test_video(sources / name, num_frames, height, width, **options)
        return (sources / name).read_bytes()

    mp4 = written("valid.mp4")
    boxes = mp4_boxes(mp4)
    files["valid"] = mp4
    files["one_frame"] = written("one_frame.mp4", num_frames=1)
    files["one_by_one_yuv444"] = written("tiny.mp4", height=1, width=1, pix_fmt="yuv444p")
    files["yuv444"] = written("yuv444.mp4", width=48, pix_fmt="yuv444p")
    files["grayscale"] = written("gray.mp4", pix_fmt="gray")  # H.264 4:0:0
    write_variable_frame_rate(sources / "vfr.mp4")
    files["variable_frame_rate"] = (sources / "vfr.mp4").read_bytes()

    files["empty"] = b""
    files["text_renamed_mp4"] = b"this is a text file, not a video\n" * 40
    files["mp4_cut_inside_ftyp"] = mp4[:8]
    files["mp4_cut_mid_payload"] = mp4[:packet_positions(sources / "valid.mp4")[6]]
    files["mp4_cut_before_index"] = mp4[:boxes["moov"][0]]
    mkv = written("valid.mkv")
    mkv_packets = packet_positions(sources / "valid.mkv")
    files["mkv_cut_at_frame_6"] = mkv[:mkv_packets[6]]
    files["mkv_cut_at_last_frame"] = mkv[:mkv_packets[-1]]  # 1 frame short: within the slack
    for seed in FLIP_SEEDS:
        files[f"header_flip_{seed:02d}"] = flip_bytes(mp4, *boxes["moov"], seed)
        files[f"payload_flip_{seed:02d}"] = flip_bytes(mp4, *boxes["mdat"], seed)

    raw_h264 = annex_b(make_video_frames(FRAMES, SIZE, SIZE))
    files["raw_h264_stream"] = raw_h264  # no container: nothing to seek with
    files["huge_frame_size_in_sps"] = with_frame_size(raw_h264, 8192, 8192)
    # The container's own boxes (avc1 sample entry, track header) claim 65535x65535; the SPS
    # inside says 32x32, and the decoder goes by the SPS.
    files["huge_frame_size_in_mp4_boxes"] = patch_box_field(
        patch_box_field(mp4, b"avc1", 28, 0xFFFF_FFFF), b"tkhd", 80, 0xFFFF_0000_FFFF_0000, 8)
    files["huge_frame_count_in_stts"] = patch_box_field(mp4, b"stts", 12, 10 ** 8)
    files["broken_keyframe_index"] = patch_box_field(mp4, b"stss", 12, 113)  # seeking fails
    assert mp4.count(b"Lavf") == 1  # the muxer's tag, in the moov box
    files["non_utf8_metadata_tag"] = mp4.replace(b"Lavf", b"L\xbfvf")
    files["frame_size_changes_midway"] = (annex_b(make_video_frames(6, SIZE, SIZE))
                                          + annex_b(make_video_frames(6, 2 * SIZE, 2 * SIZE)))

    assert set(UNREADABLE) | set(READABLE) <= set(files)
    for name, data in files.items():
        (root / name).mkdir()
        (root / name / "video.mp4").write_bytes(data)
    return Corpus(root, sorted(files))


def load_every_item(dataset: VideoDataset) -> list[dict]:
    return [dataset[index] for index in range(len(dataset))]


@pytest.fixture(scope="module")
def skip_run(corpus) -> tuple[VideoFolder, list[dict]]:
    """Every item of the corpus read in on_error="skip" mode (decoding the clips directly)."""
    dataset = VideoFolder(corpus.root, clip_sampler=RandomClipSampler(FRAMES), on_error="skip")
    return dataset, load_every_item(dataset)


def test_skip_mode_reads_or_reports_every_file_and_never_shifts_labels(corpus, skip_run):
    dataset, items = skip_run
    assert dataset.classes == corpus.names and len(items) == len(corpus.names)
    returned = set()
    for item in items:
        name = Path(item["path"]).parent.name
        assert item["label"] == corpus.names.index(name) == item["index"]
        info = video_info(item["path"])
        assert item["video"].dtype == torch.uint8
        assert item["video"].shape == (1, FRAMES, info.height, info.width, 3)
        returned.add(item["path"])
    unreadable = dataset.stats.unreadable
    assert all(reason for reason in unreadable.values())
    # Every file is returned or reported with its reason, never both, never neither.
    assert returned.isdisjoint(unreadable)
    assert returned | set(unreadable) == {corpus.path(name) for name in corpus.names}
    for name, phrase in UNREADABLE.items():
        assert phrase in unreadable[corpus.path(name)], name
    assert not {corpus.path(name) for name in READABLE} & set(unreadable)


def test_unusual_valid_videos_decode_to_the_right_pictures(corpus, skip_run):
    items = {Path(item["path"]).parent.name: item["video"][0].numpy() for item in skip_run[1]}
    assert items["one_by_one_yuv444"].shape == (FRAMES, 1, 1, 3)
    assert items["yuv444"].shape == (FRAMES, SIZE, 48, 3)
    assert (items["one_frame"] == items["one_frame"][0]).all()  # one frame, looped
    gray = items["grayscale"].astype(int)
    assert np.abs(gray - gray[..., :1]).max() <= 1  # R = G = B
    blue = items["variable_frame_rate"][..., 2].mean(axis=(1, 2))
    assert (np.diff(blue) >= -3).all()  # frames in time order, held across the gaps
    for name in ("huge_frame_size_in_mp4_boxes", "broken_keyframe_index", "non_utf8_metadata_tag"):
        np.testing.assert_array_equal(items[name], items["valid"])  # same payload, same frames


def test_videos_that_cannot_seek_still_read_every_window_exactly(corpus):
    """Seeking fails on these (a damaged keyframe table, no container): windows are decoded
    from the start instead."""
    for name in ("broken_keyframe_index", "raw_h264_stream"):
        full = read_frames(corpus.path(name), range(FRAMES))
        for start in range(FRAMES):
            np.testing.assert_array_equal(read_clip(corpus.path(name), start, 3),
                                          full[(start + np.arange(3)) % FRAMES])


def test_the_decoded_video_cache_gives_the_same_items(corpus, skip_run, tmp_path):
    direct, direct_items = skip_run
    cached = VideoFolder(corpus.root, clip_sampler=RandomClipSampler(FRAMES), on_error="skip",
                         cache_dir=tmp_path / "cache")
    cached_items = load_every_item(cached)
    assert cached.stats.unreadable.keys() == direct.stats.unreadable.keys()
    for first, second in zip(direct_items, cached_items):
        assert (first["index"], first["label"]) == (second["index"], second["label"])
        assert torch.equal(first["video"], second["video"])


def test_raise_mode_raises_one_error_naming_the_file(corpus, skip_run):
    unreadable = skip_run[0].stats.unreadable
    dataset = VideoFolder(corpus.root, clip_sampler=RandomClipSampler(FRAMES), on_error="raise")
    for index, name in enumerate(corpus.names):
        path = corpus.path(name)
        if path not in unreadable:
            assert dataset[index]["index"] == index
            continue
        with pytest.raises(VideoDecodeError) as caught:
            dataset[index]
        assert caught.value.path == path and path in str(caught.value)
        assert caught.value.reason == unreadable[path]


def test_data_check_reports_the_files_the_loader_skipped(corpus, skip_run, capsys):
    skipped = set(skip_run[0].stats.unreadable)
    full = check_dataset(corpus.root, min_frames=FRAMES, full=True)
    assert {path for path, _ in full.unreadable} == skipped
    assert full.total == len(corpus.names) and full.readable == len(corpus.names) - len(skipped)
    for name, phrase in UNREADABLE.items():
        assert phrase in dict(full.unreadable)[corpus.path(name)], name
    # The quick check (first and last frames) misses only damage in the middle of a video.
    quick = {path for path, _ in check_dataset(corpus.root, min_frames=FRAMES).unreadable}
    assert {corpus.path(name) for name in UNREADABLE} <= quick <= skipped
    assert main(["data", "check", str(corpus.root), "--full", "--min-frames", str(FRAMES)]) == 1
    out = capsys.readouterr().out
    assert f"{len(corpus.names)} videos: {len(corpus.names) - len(skipped)} readable, " \
           f"{len(skipped)} unreadable" in out
    assert all(f"unreadable: {path}: " in out for path in skipped)
