"""Video datasets: items, labels, determinism, resizing, looping, skipping unreadable videos."""
import logging
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hdc_lib.data.datasets import HMDB51, UCF101, VideoDataset, VideoFolder, resize_short_side
from hdc_lib.data.samplers import RandomClipSampler, UniformClipSampler
from hdc_lib.data.splits import SplitFileError
from hdc_lib.data.video_io import VideoDecodeError, read_frames, video_info


def ucf101(layout, train=True, **options):
    options.setdefault("clip_sampler", RandomClipSampler(4, stride=(1, 2), num_clips=2))
    return UCF101(layout["videos"], layout["splits"], fold=1, train=train, **options)


def test_items_have_the_contract_shape_and_true_labels(ucf101_layout):
    dataset = ucf101(ucf101_layout)
    assert len(dataset) == 6 and dataset.classes == ucf101_layout["classes"]
    for index, (relative, label) in enumerate(ucf101_layout["train"]):
        item = dataset[index]
        assert item["video"].dtype == torch.uint8 and item["video"].shape == (2, 4, 32, 32, 3)
        assert item["label"] == label and item["index"] == index
        assert item["path"] == str(ucf101_layout["videos"] / relative)
        assert item["looped"] is False and item["skipped"] == 0


def test_items_hold_the_frames_the_sampler_picked(ucf101_layout):
    dataset = ucf101(ucf101_layout)
    item = dataset[3]
    indices = dataset.clip_sampler(video_info(item["path"]).num_frames, dataset.item_rng(3))
    expected = read_frames(item["path"], indices.ravel()).reshape(2, 4, 32, 32, 3)
    np.testing.assert_array_equal(item["video"].numpy(), expected)


def test_items_are_deterministic_under_seed_epoch_and_index(ucf101_layout):
    first, again = ucf101(ucf101_layout, seed=3), ucf101(ucf101_layout, seed=3)
    videos = [first[i]["video"] for i in range(len(first))]
    for index in reversed(range(len(again))):  # another instance, another order: same items
        assert torch.equal(again[index]["video"], videos[index])
    first.set_epoch(1)
    assert any(not torch.equal(first[i]["video"], videos[i]) for i in range(len(first)))
    first.set_epoch(0)
    assert torch.equal(first[2]["video"], videos[2])  # resumable: epoch 0 is epoch 0 again
    other_seed = ucf101(ucf101_layout, seed=4)
    assert any(not torch.equal(other_seed[i]["video"], videos[i]) for i in range(len(first)))


def test_default_collate_batches_items(ucf101_layout):
    dataset = ucf101(ucf101_layout, train=False,
                     clip_sampler=UniformClipSampler(4, stride=2, num_clips=3))
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["video"].shape == (3, 3, 4, 32, 32, 3) and batch["video"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 1, 2] and batch["index"].tolist() == [0, 1, 2]
    assert len(batch["path"]) == 3


def test_short_side_resize(ucf101_layout, synthetic_video_writer, tmp_path):
    path = tmp_path / "wide.mp4"
    synthetic_video_writer(path, num_frames=6, height=32, width=48)
    dataset = VideoDataset([(path, 0)], RandomClipSampler(3), short_side=16)
    video = dataset[0]["video"]
    assert video.shape == (1, 3, 16, 24, 3)
    indices = dataset.clip_sampler(6, dataset.item_rng(0))
    frames = read_frames(path, indices[0])
    np.testing.assert_array_equal(video[0].numpy(), resize_short_side(frames, 16))
    # Antialiased bilinear keeps the picture: halving is close to 2x2 block averaging.
    blocks = frames.reshape(3, 16, 2, 24, 2, 3).mean(axis=(2, 4))
    assert np.abs(video[0].numpy() - blocks).mean() < 4
    resized = resize_short_side(frames, 16)
    assert resize_short_side(resized, 16) is resized  # already the right size: untouched


def test_one_frame_video_loops_and_is_counted(tmp_path, synthetic_video_writer):
    still, long = tmp_path / "still.mp4", tmp_path / "long.mp4"
    synthetic_video_writer(still, num_frames=1)
    synthetic_video_writer(long, num_frames=10)
    dataset = VideoDataset([(still, 0), (long, 1)], RandomClipSampler(8))
    item = dataset[0]
    assert item["looped"] is True and item["video"].shape == (1, 8, 32, 48, 3)
    assert (item["video"] == item["video"][0, 0]).all()
    assert dataset[1]["looped"] is False
    assert (dataset.stats.looped, dataset.stats.decoded) == (1, 2)


def test_frame_counts_are_read_once_per_file_version(tmp_path, synthetic_video_writer, monkeypatch):
    import hdc_lib.data.datasets as datasets

    calls = []
    monkeypatch.setattr(datasets, "video_info", lambda path: calls.append(path) or video_info(path))
    path = tmp_path / "clip.mp4"
    synthetic_video_writer(path, num_frames=6)
    dataset = VideoDataset([(path, 0)], RandomClipSampler(4))
    for epoch in range(3):
        dataset.set_epoch(epoch)
        assert dataset[0]["looped"] is False
    assert len(calls) == 1
    synthetic_video_writer(path, num_frames=3)  # replaced by a shorter video: must be re-read
    item = dataset[0]
    assert len(calls) == 2 and item["looped"] is True  # 4 frames from a 3-frame video loop
    frames = read_frames(path, [0, 1, 2])
    assert any(np.array_equal(item["video"][0, 0].numpy(), frame) for frame in frames)
    path.unlink()
    with pytest.raises(VideoDecodeError, match="file not found"):
        dataset[0]


@pytest.fixture
def dataset_with_bad_videos(tmp_path, synthetic_video_writer):
    """Six videos, labels 0..5, of which 1 (empty), 2 (text) and 5 (truncated) are unreadable."""
    samples = []
    for index in range(6):
        path = tmp_path / f"video{index}.mp4"
        synthetic_video_writer(path, num_frames=8, height=16, width=16, seed=index)
        samples.append((path, index))
    samples[1][0].write_bytes(b"")
    samples[2][0].write_text("not a video\n")
    samples[5][0].write_bytes(samples[5][0].read_bytes()[:300])
    return samples


def test_raise_mode_names_the_file(dataset_with_bad_videos):
    dataset = VideoDataset(dataset_with_bad_videos, RandomClipSampler(4))
    assert dataset[0]["label"] == 0
    with pytest.raises(VideoDecodeError, match="video1.mp4: empty file"):
        dataset[1]


def test_skip_mode_logs_counts_and_never_shifts_labels(dataset_with_bad_videos, caplog):
    dataset = VideoDataset(dataset_with_bad_videos, RandomClipSampler(4), on_error="skip")
    with caplog.at_level(logging.WARNING, logger="hdc_lib.data.datasets"):
        items = [dataset[i] for i in range(6)]
    # Each item is a readable video carrying its own index, label and path.
    assert [item["index"] for item in items] == [0, 3, 3, 3, 4, 0]
    assert all(item["label"] == item["index"] for item in items)
    assert all(item["path"].endswith(f"video{item['index']}.mp4") for item in items)
    assert [item["skipped"] for item in items] == [0, 2, 1, 0, 0, 1]
    assert dataset.stats.skipped == 4 and dataset.stats.decoded == 6
    assert sorted(os.path.basename(path) for path in dataset.stats.unreadable) == [
        "video1.mp4", "video2.mp4", "video5.mp4"]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 3  # once per unreadable file
    assert any("video1.mp4" in w and "empty file" in w for w in warnings)
    assert torch.equal(items[1]["video"], dataset[3]["video"])  # replaced deterministically


def test_skip_mode_survives_a_multiprocess_dataloader(dataset_with_bad_videos):
    dataset = VideoDataset(dataset_with_bad_videos, RandomClipSampler(4), on_error="skip")
    batches = list(DataLoader(dataset, batch_size=2, num_workers=2))
    labels = torch.cat([batch["label"] for batch in batches])
    indices = torch.cat([batch["index"] for batch in batches])
    assert torch.equal(labels, indices) and len(labels) == 6
    assert sum(batch["skipped"].sum().item() for batch in batches) == 4


def test_all_unreadable_is_an_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(RuntimeError, match="none of the 1 videos is readable"):
        VideoDataset([(empty, 0)], RandomClipSampler(4), on_error="skip")[0]


def test_ucf101_check_counts_rejects_a_non_official_split(ucf101_layout):
    with pytest.raises(SplitFileError, match="6 videos in 3 classes.*official ucf101 split 1"):
        ucf101(ucf101_layout, check_counts=True)


def test_hmdb51_and_folder_datasets(hmdb51_layout):
    sampler = RandomClipSampler(4)
    test = HMDB51(hmdb51_layout["videos"], hmdb51_layout["splits"], train=False,
                  clip_sampler=sampler)
    assert [test[i]["label"] for i in range(len(test))] == [0, 1]
    folder = VideoFolder(hmdb51_layout["videos"], clip_sampler=sampler)
    assert folder.classes == ["brush_hair", "cartwheel"]
    assert [folder[i]["label"] for i in range(len(folder))] == [0, 0, 0, 1, 1]
    assert folder[4]["video"].shape == (1, 4, 32, 32, 3)


def test_bad_on_error_value():
    with pytest.raises(ValueError, match="on_error"):
        VideoDataset([], RandomClipSampler(4), on_error="ignore")


def test_frame_size_lets_videos_of_different_sizes_batch(synthetic_video_writer, tmp_path):
    """Kinetics and HMDB51 mix frame sizes: with frame_size every clip has the same shape."""
    wide, tall = tmp_path / "a" / "wide.mp4", tmp_path / "b" / "tall.mp4"
    synthetic_video_writer(wide, num_frames=8, height=32, width=48)
    synthetic_video_writer(tall, num_frames=8, height=48, width=32)
    dataset = VideoDataset([(wide, 0), (tall, 1)], RandomClipSampler(4), frame_size=(24, 40))
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["video"].shape == (2, 1, 4, 24, 40, 3)
    with pytest.raises(ValueError, match="not both"):
        VideoDataset([(wide, 0)], RandomClipSampler(4), short_side=24, frame_size=(24, 40))
