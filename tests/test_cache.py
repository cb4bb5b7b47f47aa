"""Decoded-video cache: identical items, invalidation on any change, atomic writes."""
import os

import numpy as np
import pytest
import torch

from hdc_lib.data import cache as cache_module
from hdc_lib.data.cache import DecodedVideoCache
from hdc_lib.data.datasets import VideoDataset
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.data.video_io import read_frames


def datasets(samples, cache_dir, **options):
    sampler = RandomClipSampler(4, stride=(1, 2), num_clips=2)
    return (VideoDataset(samples, sampler, **options),
            VideoDataset(samples, sampler, cache_dir=cache_dir, **options))


@pytest.mark.parametrize("short_side", [None, 16])
def test_cached_items_equal_uncached_items(tmp_path, synthetic_video_writer, short_side):
    samples = []
    for index, num_frames in enumerate((3, 9, 14)):  # includes a video whose clips loop
        path = tmp_path / f"video{index}.mp4"
        synthetic_video_writer(path, num_frames=num_frames, height=32, width=48, seed=index)
        samples.append((path, index))
    plain, cached = datasets(samples, tmp_path / "cache", short_side=short_side)
    for epoch in range(2):  # epoch 0 fills the cache, epoch 1 reads it
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(3):
            expected, item = plain[index], cached[index]
            assert torch.equal(item["video"], expected["video"])
            assert {k: item[k] for k in ("label", "index", "path", "looped")} == {
                k: expected[k] for k in ("label", "index", "path", "looped")}
    assert (cached.stats.decoded, cached.stats.cached) == (3, 3)
    assert cached.stats.looped == plain.stats.looped > 0
    entries = list((tmp_path / "cache").glob("*.npy"))
    assert len(entries) == 3 and not list((tmp_path / "cache").glob("*.tmp"))
    stored = np.load(entries[0], mmap_mode="r")
    assert isinstance(stored, np.memmap) and stored.dtype == np.uint8


def test_touching_or_editing_the_video_invalidates_its_entry(video_file, tmp_path,
                                                             synthetic_video_writer):
    path, _ = video_file
    cache = DecodedVideoCache(tmp_path / "cache")
    decodes = []

    def decode():
        decodes.append(1)
        return read_frames(path, range(24))

    settings = {"short_side": None}
    first, hit = cache.load(path, settings, decode)
    assert not hit and first.shape == (24, 32, 48, 3)
    assert cache.load(path, settings, decode)[1] and len(decodes) == 1
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))  # touch
    assert not cache.load(path, settings, decode)[1] and len(decodes) == 2
    synthetic_video_writer(path, num_frames=24, seed=5)  # new content
    edited, hit = cache.load(path, settings, decode)
    assert not hit and len(decodes) == 3 and not np.array_equal(edited, first)
    assert not cache.load(path, {"short_side": 16}, decode)[1]  # other settings, other entry


def test_a_failed_write_leaves_no_entry(video_file, tmp_path, monkeypatch):
    path, _ = video_file
    cache = DecodedVideoCache(tmp_path / "cache")

    def killed_mid_write(file, frames):
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(cache_module.np, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        cache.load(path, {}, lambda: read_frames(path, range(24)))
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    frames, hit = cache.load(path, {}, lambda: read_frames(path, range(24)))
    assert not hit and frames.shape == (24, 32, 48, 3)


def test_an_unreadable_entry_is_decoded_again(video_file, tmp_path):
    path, _ = video_file
    cache = DecodedVideoCache(tmp_path / "cache")
    frames = np.array(cache.load(path, {}, lambda: read_frames(path, range(24)))[0])
    cache.entry_path(path, {}).write_bytes(b"garbage")  # (in place: never done to a mapped entry)
    again, hit = cache.load(path, {}, lambda: read_frames(path, range(24)))
    assert not hit and np.array_equal(again, frames)


def test_cached_dataset_reports_missing_files_as_decode_errors(tmp_path):
    dataset = VideoDataset([(tmp_path / "gone.mp4", 0)], RandomClipSampler(4),
                           cache_dir=tmp_path / "cache", on_error="skip")
    with pytest.raises(RuntimeError, match="none of the 1 videos"):
        dataset[0]
    assert dataset.stats.unreadable == {str(tmp_path / "gone.mp4"): "file not found"}


def test_a_data_folder_moved_with_its_cache_keeps_every_entry(tmp_path, synthetic_video_writer):
    """Keys hold the video's path from the cache folder's parent, not its absolute path: a data
    folder moved (or copied with its files' times) along with its cache is served from the cache."""
    old, new = tmp_path / "old" / "world", tmp_path / "new" / "world"
    for index in range(3):
        synthetic_video_writer(old / "videos" / f"video{index}.mp4", num_frames=9, seed=index)
    samples = [(old / "videos" / f"video{index}.mp4", index) for index in range(3)]
    before = VideoDataset(samples, RandomClipSampler(4), cache_dir=old / ".cache")
    items = [before[i]["video"] for i in range(3)]
    new.parent.mkdir()
    os.rename(old, new)
    moved = [(new / "videos" / f"video{index}.mp4", index) for index in range(3)]
    decodes = []
    after = VideoDataset(moved, RandomClipSampler(4), cache_dir=new / ".cache")
    for i in range(3):
        _, hit = after.cache.load(moved[i][0], after.decode_settings, lambda: decodes.append(1))
        assert hit
        assert torch.equal(after[i]["video"], items[i])
    assert decodes == []
