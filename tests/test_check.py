"""`hdc data check`: every unreadable video reported with its reason, totals, exit code."""
import argparse

import numpy as np
import pytest

from hdc_lib.data.check import add_check_parser, check_dataset, detect_format, frames_needed
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.errors import UserError


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="hdc")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data").add_subparsers(dest="data_command", required=True)
    add_check_parser(data)
    args = parser.parse_args(argv)
    return args.func(args)


def test_a_clean_dataset_passes(ucf101_layout, capsys):
    report = check_dataset(ucf101_layout["videos"], ucf101_layout["splits"], min_frames=20)
    assert report.ok and report.total == report.readable == 9
    assert len(report.short) == 2  # the first video of each list has 18 frames
    code = run_cli(["data", "check", str(ucf101_layout["videos"]), "--splits",
                    str(ucf101_layout["splits"]), "--min-frames", "20"])
    assert code == 0
    assert "9 videos: 9 readable, 0 unreadable, 2 shorter than 20 frames" in capsys.readouterr().out


def test_every_unreadable_video_is_reported(ucf101_layout, capsys):
    videos = ucf101_layout["videos"]
    train = [videos / relative for relative, _ in ucf101_layout["train"]]
    train[0].write_bytes(b"")
    train[1].write_text("not a video")
    train[2].write_bytes(train[2].read_bytes()[:200])
    train[3].unlink()
    report = check_dataset(videos, ucf101_layout["splits"], format="ucf101", fold=1)
    assert not report.ok and (report.total, report.readable) == (9, 5)
    reasons = dict(report.unreadable)
    assert reasons[str(train[0])] == "empty file (0 bytes)"
    assert reasons[str(train[1])].startswith("not a readable container")
    assert reasons[str(train[2])].startswith("not a readable container")
    assert reasons[str(train[3])] == "listed in the split files but not found on disk"
    code = run_cli(["data", "check", str(videos), "--splits", str(ucf101_layout["splits"])])
    out = capsys.readouterr().out
    assert code == 1
    assert f"unreadable: {train[0]}: empty file" in out and "4 unreadable" in out


def test_truncated_tail_is_caught(tmp_path, synthetic_video_writer):
    """A cut Matroska file still opens and decodes its first frames; its last frame fails."""
    good = tmp_path / "videos" / "walk" / "good.mkv"
    synthetic_video_writer(good, num_frames=24)
    cut = tmp_path / "videos" / "walk" / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    report = check_dataset(tmp_path / "videos", min_frames=4)
    assert report.readable == 1 and [p for p, _ in report.unreadable] == [str(cut)]
    assert "truncated" in report.unreadable[0][1]


def test_hmdb51_check_and_format_detection(hmdb51_layout, tmp_path):
    assert detect_format(hmdb51_layout["splits"]) == "hmdb51"
    assert detect_format(None) == "folder"
    with pytest.raises(UserError, match="cannot tell the split format"):
        detect_format(tmp_path)
    report = check_dataset(hmdb51_layout["videos"], hmdb51_layout["splits"], min_frames=16)
    assert report.ok and report.total == 4 and len(report.short) == 4  # unused (flag 0) left out


@pytest.mark.parametrize("request_", [
    {"num_clips": 2, "num_frames": 4, "stride": 3, "disjoint": True},          # coupled / HDC: end to end
    {"num_clips": 3, "num_frames": 4, "stride": (1, 2), "offset": (2, 5)},     # toy presets: a few frames apart
    {"num_clips": 2, "num_frames": 8, "stride": 1},                            # DCLR: windows may overlap
])
def test_frames_needed_is_the_fewest_frames_whose_items_keep_their_layout(request_):
    """With frames_needed(request) frames every draw of the sampler keeps its layout (no window
    loops; disjoint windows do not overlap; windows `offset` apart are lo..hi apart); with one
    frame fewer some draw does not."""
    sampler = RandomClipSampler(**request_)
    rng = np.random.default_rng(0)

    def layout_kept(frames: int) -> bool:
        indices, looped = sampler.sample(frames, rng)
        starts = np.sort(indices[:, 0])
        if request_.get("disjoint"):
            ends = np.sort(indices.max(1))
            return not looped and bool((starts[1:] > ends[:-1]).all())
        if request_.get("offset"):
            return not looped and bool(np.isin(np.diff(starts), range(2, 6)).all())
        return not looped

    needed = frames_needed(request_)
    assert all(layout_kept(needed) for _ in range(300))
    assert not all(layout_kept(needed - 1) for _ in range(300))


@pytest.mark.parametrize("preset, frames, short", [("coupled_r2plus1d", 62, 9), ("hdc_r2plus1d", 62, 9),
                                                   ("dclr_r2plus1d", 32, 8)])
def test_data_check_takes_the_frames_a_config_needs(preset, frames, short, ucf101_layout, capsys):
    from hdc_lib.cli import main

    assert main(["data", "check", str(ucf101_layout["videos"]), "--splits", str(ucf101_layout["splits"]),
                 "--config", f"configs/ucf101/{preset}.yaml", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"a training item needs {frames} frames per video" in out
    assert f"9 videos: 9 readable, 0 unreadable, {short} shorter than {frames} frames" in out  # 18-33 frames
