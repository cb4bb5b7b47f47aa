"""Shared pytest fixtures. Each block is owned by the module's author; append new blocks below."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hdc_lib.data.video_io import write_video

# ---------------------------------------------------------------------------------------------
# Video data (hdc_lib/data): small synthetic videos written with our own writer into tmp_path.
# Every frame is smooth (so the H.264 round trip is close) and different from every other frame
# (a blue level that rises with time), so a wrong frame index cannot go unnoticed. Keyframes
# every 5 frames make readers really seek.
# ---------------------------------------------------------------------------------------------

VIDEO_KEYFRAME_INTERVAL = 5


def make_video_frames(num_frames: int = 24, height: int = 32, width: int = 48,
                      seed: int = 0) -> np.ndarray:
    """uint8 (T, H, W, 3): a drifting smooth pattern, blue = 10 * t + 5 (distinct per frame)."""
    rows, columns = np.mgrid[:height, :width].astype(np.float64)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = 128 + 70 * np.sin(columns / 9 + t / 4 + phase)
        frames[t, ..., 1] = 128 + 70 * np.cos(rows / 8 - t / 5 + phase)
        frames[t, ..., 2] = (10 * t + 5) % 250
    return frames


def write_test_video(path: Path, num_frames: int = 24, height: int = 32, width: int = 48,
                     seed: int = 0, **options) -> np.ndarray:
    """Write a synthetic video (keyframe every 5 frames) and return the frames written."""
    frames = make_video_frames(num_frames, height, width, seed)
    options.setdefault("keyframe_interval", VIDEO_KEYFRAME_INTERVAL)
    write_video(path, frames, **options)
    return frames


@pytest.fixture
def video_file(tmp_path) -> tuple[Path, np.ndarray]:
    """A 24-frame 32x48 H.264 mp4 and the frames written into it."""
    path = tmp_path / "clip.mp4"
    return path, write_test_video(path)


# The tiny UCF101-layout dataset: classInd spells "HandstandPushups", its videos are
# "v_HandStandPushups_*" (the real dataset's quirk); files end in CRLF with trailing blanks.
UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
UCF_TRAIN = [("ApplyEyeMakeup", 1, 1), ("ApplyEyeMakeup", 2, 1), ("HandstandPushups", 1, 1),
             ("HandstandPushups", 2, 1), ("YoYo", 1, 1), ("YoYo", 2, 2)]  # class, group, clip
UCF_TEST = [("ApplyEyeMakeup", 3, 1), ("HandstandPushups", 3, 1), ("YoYo", 3, 1)]


def ucf_file_name(class_name: str, group: int, clip: int, extension: str = ".mp4") -> str:
    spelled = "HandStandPushups" if class_name == "HandstandPushups" else class_name
    return f"v_{spelled}_g{group:02d}_c{clip:02d}{extension}"


def write_lines(path: Path, lines: list[str]) -> None:
    """A split file as the official ones come: CRLF ends, trailing blanks, a final blank line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{line} \r\n" for line in lines).encode() + b"\r\n")


@pytest.fixture
def ucf101_layout(tmp_path) -> dict:
    """UCF101-layout dataset (videos/, splits/ with classInd, trainlist01, testlist01).

    Video lengths vary (18-30 frames); returns paths and the expected (relative path, label)s.
    """
    videos, splits = tmp_path / "videos", tmp_path / "splits"
    write_lines(splits / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(UCF_CLASSES)])
    expected = {}
    for part, entries in (("train", UCF_TRAIN), ("test", UCF_TEST)):
        lines, expected[part] = [], []
        for number, (name, group, clip) in enumerate(entries):
            relative = f"{name}/{ucf_file_name(name, group, clip)}"
            label = UCF_CLASSES.index(name)
            write_test_video(videos / relative, num_frames=18 + 3 * number, height=32, width=32,
                             seed=number)
            lines.append(relative if part == "test" else f"{relative} {label + 1}")
            expected[part].append((relative, label))
        write_lines(splits / f"{part}list01.txt", lines)
    return {"videos": videos, "splits": splits, "classes": UCF_CLASSES, **expected}


# HMDB51 layout: actions with underscores, flags 1 train / 2 test / 0 unused.
HMDB_ACTIONS = {"brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1),
                               ("Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", 2),
                               ("Aussie_Brush_brush_hair_u_cm_np1_ri_med_0.avi", 0)],
                "cartwheel": [("Cartwheel_School_cartwheel_f_cm_np1_le_med_0.avi", 2),
                              ("cartwheel_on_grass_cartwheel_f_cm_np1_ri_goo_0.avi", 1)]}


@pytest.fixture
def hmdb51_layout(tmp_path) -> dict:
    """HMDB51-layout dataset (videos/<action>/*.avi, splits/<action>_test_split1.txt)."""
    videos, splits = tmp_path / "videos", tmp_path / "splits"
    for number, (action, entries) in enumerate(HMDB_ACTIONS.items()):
        for video, _ in entries:
            write_test_video(videos / action / video, num_frames=12, height=32, width=32,
                             seed=number)
        write_lines(splits / f"{action}_test_split1.txt", [f"{v} {flag}" for v, flag in entries])
    return {"videos": videos, "splits": splits, "classes": sorted(HMDB_ACTIONS)}


@pytest.fixture
def synthetic_video_writer():
    """`write_test_video(path, num_frames=24, height=32, width=48, seed=0, **write_video_options)`,
    for tests that need videos of their own."""
    return write_test_video


# ---- engine fixtures: a tiny toy world and the overrides that train on it in seconds ----------
TINY_WORLD = {"videos_per_class": 4, "frames": 24, "size": 48}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A rendered toy world of 32 videos (24 train / 8 test), shared by the engine tests."""
    from hdc_lib.data.toyworld import ensure_toyworld

    root = tmp_path_factory.mktemp("toyworld")
    ensure_toyworld(root, progress=False, **TINY_WORLD)
    return root


@pytest.fixture
def tiny_overrides(tiny_world, tmp_path) -> list[str]:
    """Config overrides for a short CPU run on the tiny world, writing into tmp_path/run."""
    import json

    return [f"data.root={tiny_world}", f"data.toyworld={json.dumps(TINY_WORLD)}",
            "train.epochs=2", "train.batch_size=8", f"train.out_dir={tmp_path / 'run'}",
            "train.knn_videos=16", "train.log_every=1", "model.augment.size=24"]
