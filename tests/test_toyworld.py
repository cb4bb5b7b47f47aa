"""The toy world: layout readable by the UCF101 reader, determinism, factor statistics, masks,
motion and its time reversal (hdc_lib/data/toyworld.py)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from hdc_lib.data.datasets import UCF101
from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.data.toyworld import (ACTIONS, REVERSE, SCENES, Masks, ToyWorld, add_toyworld_parser,
                                   class_name, draw_factors, ensure_toyworld, expected_home_rate,
                                   load_manifest, render_toyworld, render_video)
from hdc_lib.data.video_io import read_frames

SMALL = dict(videos_per_class=4, size=32, frames=16)  # 24 train + 8 test videos


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toyworld")
    render_toyworld(out, progress=False, **SMALL)
    return out


def decoded_videos(root: Path) -> dict[str, np.ndarray]:
    frames = SMALL["frames"]
    return {row["path"]: read_frames(root / "videos" / row["path"], range(frames))
            for row in load_manifest(root)}


def test_layout_is_read_by_the_ucf101_reader(small_world):
    splits = small_world / "splits"
    assert (splits / "classInd.txt").read_text().splitlines() == [
        f"{i + 1} {class_name(a)}" for i, a in enumerate(ACTIONS)]
    rows = {row["path"]: row for row in load_manifest(small_world)}
    for train, count in ((True, 24), (False, 8)):
        dataset = UCF101(small_world / "videos", splits, fold=1, train=train,
                         clip_sampler=UniformClipSampler(8, stride=2, num_clips=2))
        assert len(dataset) == count
        for item in (dataset[0], dataset[count - 1]):
            assert tuple(item["video"].shape) == (2, 8, 32, 32, 3)
            row = rows[Path(item["path"]).relative_to(small_world / "videos").as_posix()]
            assert row["split"] == ("train" if train else "test")
            assert item["label"] == row["label"] == ACTIONS.index(row["action"])
    # Groups never straddle the split (UCF101 splits by group).
    groups = {(r["action"], r["group"]): r["split"] for r in rows.values()}
    assert len(groups) == len({(r["action"], r["group"], r["split"]) for r in rows.values()})


def test_manifest_and_masks_describe_every_video(small_world):
    world = ToyWorld(**SMALL)
    rows = load_manifest(small_world)
    assert rows == draw_factors(world)  # exact float round trip through the csv
    masks = Masks(small_world)
    assert sorted(masks) == sorted(row["path"] for row in rows)
    frames, mask = render_video(rows[5], world)
    np.testing.assert_array_equal(masks[rows[5]["path"]], mask)
    # The H.264 round trip keeps the pixels close (4:2:0 chroma blurs the small coloured digit).
    decoded = read_frames(small_world / "videos" / rows[5]["path"], range(world.frames))
    assert np.abs(decoded.astype(float) - frames).mean() < 6


def test_same_seed_same_world_other_seed_other_world(small_world, tmp_path):
    render_toyworld(tmp_path, progress=False, **SMALL)
    assert (tmp_path / "manifest.csv").read_bytes() == (small_world / "manifest.csv").read_bytes()
    again, first = decoded_videos(tmp_path), decoded_videos(small_world)
    assert again.keys() == first.keys()
    for path in first:
        np.testing.assert_array_equal(again[path], first[path], err_msg=path)
    other = ToyWorld(**SMALL, seed=1)
    assert draw_factors(other) != draw_factors(ToyWorld(**SMALL))
    assert not np.array_equal(render_video(draw_factors(other)[0], other)[0],
                              read_frames(small_world / "videos" / load_manifest(small_world)[0]["path"],
                                          range(SMALL["frames"])))


def test_ensure_renders_only_when_missing_different_or_interrupted(tmp_path):
    tiny = dict(videos_per_class=2, size=16, frames=4)
    assert ensure_toyworld(tmp_path, progress=False, **tiny)["rendered"]
    stamp = (tmp_path / "manifest.csv").stat().st_mtime_ns
    assert not ensure_toyworld(tmp_path, progress=False, **tiny)["rendered"]
    assert (tmp_path / "manifest.csv").stat().st_mtime_ns == stamp
    (tmp_path / "toyworld.json").unlink()  # what an interrupted render leaves
    assert ensure_toyworld(tmp_path, progress=False, **tiny)["rendered"]
    summary = ensure_toyworld(tmp_path, progress=False, **{**tiny, "videos_per_class": 3})
    assert summary["rendered"] and summary["videos"] == 3 * len(ACTIONS)
    assert len(list((tmp_path / "videos").rglob("*.mp4"))) == 3 * len(ACTIONS)  # no stale files


def contingency(rows: list[dict], column: str, levels: int) -> np.ndarray:
    table = np.zeros((len(ACTIONS), levels), dtype=int)
    for row in rows:
        table[row["label"], row[column]] += 1
    return table


@pytest.mark.parametrize("bias", [0.8, 0.0])
def test_factor_statistics(bias):
    """Thousands of rows, no pixels: the scene bias is what it says, objects are independent."""
    rows = draw_factors(ToyWorld(videos_per_class=1000, bias=bias))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    # Train home-scene rate: binomial, within 4 standard errors of bias + (1 - bias) / #scenes.
    expected = expected_home_rate(bias)
    measured = np.mean([r["home_scene"] for r in train])
    assert abs(measured - expected) < 4 * np.sqrt(expected * (1 - expected) / len(train))
    # Test scenes and all objects: independent of the action (chi-square test of independence).
    assert chi2_contingency(contingency(test, "scene_id", len(SCENES))).pvalue > 1e-3
    for split in (train, test):
        assert chi2_contingency(contingency(split, "object_id", 10)).pvalue > 1e-3
    if bias == 0.0:
        assert chi2_contingency(contingency(train, "scene_id", len(SCENES))).pvalue > 1e-3
    # Worlds differing only in bias share their test split.
    assert test == [r for r in draw_factors(ToyWorld(videos_per_class=1000, bias=0.5))
                    if r["split"] == "test"]


def test_mask_covers_the_object():
    """Only pixels under the mask are mostly object: recolouring the object from black to white
    changes them by at least half the colour difference, and every other pixel by less."""
    world = ToyWorld(**SMALL)
    for row in draw_factors(world)[::5]:
        white, mask = render_video({**row, "colour_r": 255, "colour_g": 255, "colour_b": 255}, world)
        black, _ = render_video({**row, "colour_r": 0, "colour_g": 0, "colour_b": 0}, world)
        change = (white.astype(int) - black).min(axis=-1)
        assert mask.any(axis=(1, 2)).all()  # the object is in every frame
        assert (change[mask] >= 127).all() and (change[~mask] <= 128).all()


def classify_motion(mask: np.ndarray) -> str:
    """The action a mask sequence shows, from its area and centroid track (a naive reference)."""
    ys, xs = np.mgrid[:mask.shape[1], :mask.shape[2]]
    area = mask.sum(axis=(1, 2)).astype(float)
    centre = np.stack([(mask * xs).sum(axis=(1, 2)), (mask * ys).sum(axis=(1, 2))], 1) / area[:, None]
    growth = np.log(area[-1] / area[0])
    if abs(growth) > np.log(2):
        return "grow" if growth > 0 else "shrink"
    displacement = centre[-1] - centre[0]
    path_length = np.linalg.norm(np.diff(centre, axis=0), axis=1).sum()
    if np.linalg.norm(displacement) > 0.8 * path_length:  # straight
        axis = int(np.argmax(np.abs(displacement)))
        return [["left", "right"], ["up", "down"]][axis][int(displacement[axis] > 0)]
    offset = centre - centre.mean(axis=0)
    turned = np.diff(np.unwrap(np.arctan2(offset[:, 1], offset[:, 0]))).sum()
    return "clockwise" if turned > 0 else "anticlockwise"  # image y points down


def test_masks_move_as_the_action_says_and_reversed_as_its_pair():
    world = ToyWorld(**SMALL)
    for row in draw_factors(world):
        _, mask = render_video(row, world)
        assert classify_motion(mask) == row["action"], row["path"]
        assert classify_motion(mask[::-1]) == REVERSE[row["action"]], row["path"]


def test_cli_prints_what_it_made(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_toyworld_parser(parser.add_subparsers())
    args = parser.parse_args(["toyworld", "--out", str(tmp_path), "--videos-per-class", "2",
                              "--size", "16", "--frames", "4", "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "16 videos" in printed and "home-scene rate" in printed and "Anticlockwise" in printed
    assert args.func(args) == 0 and "already up to date" in capsys.readouterr().out


def test_invalid_arguments_are_refused():
    for bad in (dict(bias=1.5), dict(size=33), dict(videos_per_class=1), dict(test_fraction=1.0)):
        with pytest.raises(ValueError):
            ToyWorld(**bad)
    assert dataclasses.replace(ToyWorld(), bias=0.0).bias == 0.0


def test_rendering_over_a_world_with_other_arguments_warns(tmp_path, caplog):
    small = {"videos_per_class": 2, "frames": 8, "size": 32}
    ensure_toyworld(tmp_path, progress=False, **small)
    with caplog.at_level("WARNING"):
        assert ensure_toyworld(tmp_path, progress=False, **{**small, "seed": 1})["rendered"]
    assert "other arguments" in caplog.text


def _ensure_in_another_process(out: str) -> bool:
    return ensure_toyworld(out, progress=False, videos_per_class=2, size=16, frames=4)["rendered"]


def test_processes_asking_for_one_world_at_once_render_it_once(tmp_path):
    """The ranks of a torchrun job (or two runs started together) ensure the same world at the same
    moment: one renders it, the others wait and find it complete, and the world is whole."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        rendered = pool.map(_ensure_in_another_process, [str(tmp_path)] * 3)
    assert sorted(rendered) == [False, False, True]
    rows = load_manifest(tmp_path)
    assert len(rows) == 2 * len(ACTIONS)
    assert sorted(str(p.relative_to(tmp_path / "videos")) for p in (tmp_path / "videos").rglob("*.mp4")) == \
        sorted(row["path"] for row in rows)


def test_clips_of_one_group_share_no_factor():
    """The probes' halves split each group (docs/methods.md, "Toy-world probes"): harmless only
    because a group is just a name, its clips agreeing on scene or object no more often
    than any two videos of the same action and split do."""
    rows = draw_factors(ToyWorld())
    for split in ("train", "test"):
        for factor in ("scene_id", "object_id"):
            same, other = [], []
            for action in ACTIONS:
                part = [r for r in rows if r["split"] == split and r["action"] == action]
                for i, a in enumerate(part):
                    for b in part[i + 1:]:
                        (same if a["group"] == b["group"] else other).append(a[factor] == b[factor])
            # ~1/8 (scene in test) to ~0.67 (scene in the biased train split): the same either way
            assert abs(np.mean(same) - np.mean(other)) < 0.05, (split, factor, np.mean(same), np.mean(other))
