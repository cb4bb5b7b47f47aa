"""The toy world: a small action dataset, rendered deterministically, in which the papers' notions
(motion vs appearance, scene bias, where the moving object is) can be seen and measured.

Not from either paper: the project ships no data, so it makes its own (docs/data.md, "The
toy world"). A video is one foreground object (a scikit-learn digit, scaled up, in a random
bright colour, alpha-blended) moving over a crop of a real photograph that scikit-image ships
(offline), seen by a still camera (a pan is an argument, off by default). Its factors:

- action (the class label) = the object's motion. Actions come in time-reversed pairs (right/left,
  down/up, clockwise/anticlockwise, grow/shrink), so no single frame and no unordered bag of frames
  can tell a pair apart: reversing a video of one action in time gives a video of its pair.
- object = the digit class; drawn independently of the action everywhere.
- scene = the photograph. In the train split each action has a home scene: with probability `bias`
  the scene is the home scene, otherwise it is uniformly random (so the home-scene rate is
  bias + (1 - bias) / #scenes; `bias=0` is the unbiased world). The test split draws scenes
  uniformly, independently of the action: a model that reads the background does well on train and
  badly on test (DCLR's scene bias, made measurable).

On disk (the UCF101 layout, so the UCF101 reader reads it unchanged):

    out_dir/videos/<Class>/v_<Class>_gXX_cYY.mp4   H.264; groups never straddle the split
    out_dir/splits/classInd.txt, trainlist01.txt, testlist01.txt
    out_dir/manifest.csv     one row per video: every factor and every motion parameter
    out_dir/masks.npz        per-frame foreground masks (bit-packed), keyed by the video's path
    out_dir/toyworld.json    version + generation arguments + summary, written last: a world
                             without it (an interrupted render) or with other arguments is redone
                             by `ensure_toyworld`.

Everything is a pure function of the `ToyWorld` arguments: `draw_factors` draws the factor table
(cheap, no pixels), `render_video` turns one row into frames and a mask (numpy, vectorised over
frames). The reproduction's supervised rows check that the world is learnable and that one frame
is not enough (docs/data.md, "Calibration").
"""
from __future__ import annotations

import argparse
import colorsys
import contextlib
import csv
import dataclasses
import fcntl
import functools
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hdc_lib.config import ConfigError
from hdc_lib.data.video_io import write_video
from hdc_lib.errors import UserError

logger = logging.getLogger(__name__)

VERSION = 3  # 2: default frames 48 px (was 64) and no camera pan (was 0.25 px/frame); 3: 200 videos per class (was 100)
FPS = 25

# Sorted, so classInd.txt order = sorted folder order (as in UCF101): any reader agrees on labels.
ACTIONS = ("anticlockwise", "clockwise", "down", "grow", "left", "right", "shrink", "up")
REVERSE = {"anticlockwise": "clockwise", "clockwise": "anticlockwise", "down": "up", "up": "down",
           "grow": "shrink", "shrink": "grow", "left": "right", "right": "left"}
# Scene i is the home scene of action i. Photographs scikit-image ships: they load offline.
SCENES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry",
          "hubble_deep_field", "coins")
NUM_OBJECTS = 10  # the ten digit classes

# Geometry, in pixels of a 64-pixel frame (scaled with `size`), calibrated (docs/data.md, "Calibration") so that
# motion survives the training clips (8 frames at stride 2, random resized crops to 32x32): objects
# that crops rarely cut out and enough displacement per clip (docs/data.md, "An earlier prototype");
# yet not so large, fast and opaque that motion is trivially easy and the scene shortcut vanishes
# (27 px, 1.2-1.6 px/frame, gain 1.5: shortcut cost 10 points; these values: 28).
OBJECT_SIDE = 24.0           # side of the digit's 8x8 box at scale 1
OUTSIDE = 0.2                # at most this fraction of the object's side ever leaves the frame
SPEED = (1.0, 1.4)           # px/frame, right/left/down/up
RADIUS = (13.0, 17.0)        # px, clockwise/anticlockwise
OMEGA = (0.22, 0.30)         # rad/frame (not scaled)
SCALE_SMALL = (0.45, 0.55)   # grow goes from small to large, shrink back
SCALE_LARGE = (1.20, 1.35)
ALPHA_GAIN = 1.2             # opacity = digit intensity (0..16) / 16 * gain, clipped to 1
MASK_OPACITY = 0.5           # the foreground mask is where the object's opacity reaches this
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}

# Manifest columns and their types: the one schema for writing and reading manifest.csv.
COLUMNS = {
    "path": str, "split": str, "label": int, "action": str, "group": int, "clip": int,
    "object_id": int, "digit_index": int, "colour_r": int, "colour_g": int, "colour_b": int,
    "scene_id": int, "scene": str, "home_scene": int,
    "crop_x": float, "crop_y": float, "pan_x": float, "pan_y": float,
    "anchor_x": float, "anchor_y": float, "velocity_x": float, "velocity_y": float,
    "radius": float, "theta0": float, "omega": float, "scale0": float, "scale1": float,
}


@dataclass(frozen=True)
class ToyWorld:
    """The generation arguments of a toy world (everything its pixels depend on).

    `videos_per_class` videos per action, of which round(videos_per_class * test_fraction) are
    test; groups of `clips_per_group` clips; `size` x `size` frames, `frames` per video; `pan` =
    largest camera pan speed in px/frame at 64 px.

    Defaults (results/toyworld_log.md has the runs behind them): no camera pan, because a pan
    reverses with the clip and so tells a clip from its time reversal whatever the object does;
    48 px frames, a third cheaper to decode and augment than 64 px for the same 32 px crops (the
    geometry scales with `size`, so the motion per input pixel is the same); 200 videos per class,
    because with 100 the supervised reference memorised its train videos (train accuracy 0.99,
    test 0.87) and missed grow/shrink.
    """

    videos_per_class: int = 200
    bias: float = 0.8
    seed: int = 0
    size: int = 48
    frames: int = 32
    test_fraction: float = 0.25
    clips_per_group: int = 5
    pan: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.bias <= 1.0:
            raise ConfigError(f"bias must be in [0, 1], got {self.bias}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.videos_per_class < 2 or self.frames < 2 or self.clips_per_group < 1:
            raise ConfigError("need videos_per_class >= 2, frames >= 2, clips_per_group >= 1")
        if self.size < 16 or self.size % 2:
            raise ConfigError(f"size must be even and >= 16 (H.264 yuv420p), got {self.size}")

    @property
    def test_per_class(self) -> int:
        return min(max(1, round(self.videos_per_class * self.test_fraction)),
                   self.videos_per_class - 1)

    @property
    def px(self) -> float:
        """Pixels of this world per pixel of a 64-pixel frame."""
        return self.size / 64.0


def class_name(action: str) -> str:
    """The UCF101-style class (folder) name of an action: 'anticlockwise' -> 'Anticlockwise'."""
    return action.capitalize()


def expected_home_rate(bias: float) -> float:
    """P(scene = home scene) in the train split: bias + (1 - bias) / #scenes."""
    return bias + (1.0 - bias) / len(SCENES)


def draw_factors(world: ToyWorld) -> list[dict]:
    """The factor table of a world: one row (dict with the COLUMNS keys) per video, no pixels.

    Rows are ordered by class, then split (test first), then clip; every column is drawn for every
    video from one generator in a fixed order, so worlds that differ only in `bias` share all draws
    (their test splits are identical, their train splits differ only in scenes).
    """
    rng = np.random.default_rng(world.seed)
    per_class = world.videos_per_class
    n = len(ACTIONS) * per_class
    label = np.repeat(np.arange(len(ACTIONS)), per_class)
    index_in_class = np.tile(np.arange(per_class), len(ACTIONS))
    is_test = index_in_class < world.test_per_class

    # Scene: home with probability bias (train only), else uniform; test is always uniform.
    take_home = (rng.random(n) < world.bias) & ~is_test
    scene_id = np.where(take_home, label % len(SCENES), rng.integers(len(SCENES), size=n))

    # Object: a digit class and one of its samples, and a bright colour, independent of the action.
    object_id = rng.integers(NUM_OBJECTS, size=n)
    digit_index = [_pick_digit(o, u) for o, u in zip(object_id, rng.random(n))]
    hue, saturation = rng.random(n), rng.uniform(0.6, 1.0, n)
    colour = np.array([colorsys.hsv_to_rgb(h, s, 1.0) for h, s in zip(hue, saturation)]) * 255

    # Camera: a crop of the 2*size resized photo, panning at (pan_x, pan_y) px/frame; the start
    # corner keeps the whole pan inside the photo (one pixel spare for bilinear sampling).
    pan = rng.uniform(-world.pan, world.pan, (n, 2)) * world.px
    room = world.size - 1 - np.abs(pan) * (world.frames - 1)
    crop = np.maximum(-pan, 0) * (world.frames - 1) + rng.random((n, 2)) * room

    motion = _draw_motion(world, [ACTIONS[i] for i in label], rng)
    rows = []
    for i in range(n):
        action, split = ACTIONS[label[i]], "test" if is_test[i] else "train"
        # Test clips are numbered first, then train clips continue with the next group number.
        position = index_in_class[i] if is_test[i] else index_in_class[i] - world.test_per_class
        first_group = 1 if is_test[i] else _num_groups(world.test_per_class, world) + 1
        group = first_group + position // world.clips_per_group
        clip = position % world.clips_per_group + 1
        name = class_name(action)
        rows.append({
            "path": f"{name}/v_{name}_g{group:02d}_c{clip:02d}.mp4", "split": split,
            "label": int(label[i]), "action": action, "group": int(group), "clip": int(clip),
            "object_id": int(object_id[i]), "digit_index": digit_index[i],
            "colour_r": int(round(colour[i, 0])), "colour_g": int(round(colour[i, 1])),
            "colour_b": int(round(colour[i, 2])),
            "scene_id": int(scene_id[i]), "scene": SCENES[scene_id[i]],
            "home_scene": int(scene_id[i] == label[i] % len(SCENES)),
            "crop_x": crop[i, 0], "crop_y": crop[i, 1], "pan_x": pan[i, 0], "pan_y": pan[i, 1],
            **{key: values[i] for key, values in motion.items()},
        })
    # Rounded once here, so the manifest (written with repr) re-renders exactly the same pixels.
    return [{k: round(float(v), 4) if COLUMNS[k] is float else v for k, v in row.items()}
            for row in rows]


def _num_groups(clips: int, world: ToyWorld) -> int:
    return -(-clips // world.clips_per_group)


@functools.lru_cache(maxsize=None)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images (1797, 8, 8) as opacity in [0, 1], and their class."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return np.clip(digits.images / 16.0 * ALPHA_GAIN, 0.0, 1.0), digits.target


def _pick_digit(object_id: int, u: float) -> int:
    """The index of one sample of digit class `object_id`, chosen by u in [0, 1)."""
    members = np.flatnonzero(_digits()[1] == object_id)
    return int(members[int(u * len(members))])


def _draw_motion(world: ToyWorld, actions: list[str], rng: np.random.Generator) -> dict:
    """Motion parameters of every video in the one form `trajectory` reads.

    Straight lines start where the whole path stays inside the allowed band of centres; circles
    are centred so the whole circle does; grow/shrink sit where the largest scale does. Every
    quantity is drawn for every video (a fixed draw count), then selected by action.
    """
    n, last = len(actions), world.frames - 1
    actions = np.array(actions)

    def band(scale):  # lowest and highest allowed object centre at this scale
        margin = (0.5 - OUTSIDE) * OBJECT_SIDE * world.px * scale
        return margin, world.size - margin

    # Lines: the reversed direction starts from the far side, the mirror image of the forward one.
    low, high = band(1.0)
    speed = rng.uniform(*SPEED, n) * world.px
    path = np.minimum(speed * last, high - low)  # short videos at small sizes stay inside
    direction = np.array([DIRECTIONS.get(a, (0, 0)) for a in actions], dtype=float)
    offset = (rng.random(n) * (high - low - path))[:, None]
    along = np.where(direction > 0, low + offset, high - offset)
    start = np.where(direction != 0, along, rng.uniform(low, high, (n, 1)))

    radius = rng.uniform(*RADIUS, n) * world.px
    omega = rng.uniform(*OMEGA, n)
    theta0 = rng.uniform(0, 2 * np.pi, n)
    centre = low + radius[:, None] + rng.random((n, 2)) * (high - low - 2 * radius)[:, None]

    small, large = rng.uniform(*SCALE_SMALL, n), rng.uniform(*SCALE_LARGE, n)
    low_large, high_large = band(large)
    still = low_large[:, None] + rng.random((n, 2)) * (high_large - low_large)[:, None]

    is_line = (direction != 0).any(axis=1)
    is_circle = np.isin(actions, ("clockwise", "anticlockwise"))
    grows, shrinks = actions == "grow", actions == "shrink"
    anchor = np.where(is_line[:, None], start, np.where(is_circle[:, None], centre, still))
    return {
        "anchor_x": anchor[:, 0], "anchor_y": anchor[:, 1],
        "velocity_x": direction[:, 0] * path / last, "velocity_y": direction[:, 1] * path / last,
        "radius": np.where(is_circle, radius, 0.0), "theta0": np.where(is_circle, theta0, 0.0),
        # Clockwise on screen is increasing angle, because image y points down.
        "omega": np.select([actions == "clockwise", actions == "anticlockwise"], [omega, -omega]),
        "scale0": np.select([grows, shrinks], [small, large], 1.0),
        "scale1": np.select([grows, shrinks], [large, small], 1.0),
    }


@functools.lru_cache(maxsize=None)
def _photo(scene: str, size: int) -> np.ndarray:
    """Scene photograph resized (anti-aliased) to (2*size, 2*size, 3) float32 in [0, 1]."""
    from skimage import data, transform
    image = getattr(data, scene)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    resized = transform.resize(image[:, :, :3], (2 * size, 2 * size), anti_aliasing=True)
    return resized.astype(np.float32)


def trajectory(row: Mapping, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object's centre (x, y) and scale at frames t = 0..frames-1, each (frames,).

    One formula for every action (the rows leave the unused terms at 0 or 1):
        centre(t) = anchor + velocity * t + radius * (cos, sin)(theta0 + omega * t)
        scale(t)  = scale0 * (scale1 / scale0) ** (t / (frames - 1))
    Reading t backwards gives the same form with the paired action's parameters (the end point
    as anchor, -velocity, -omega, scale0 and scale1 swapped): time reversal maps action to pair.
    """
    t = np.arange(frames, dtype=np.float64)
    angle = row["theta0"] + row["omega"] * t
    x = row["anchor_x"] + row["velocity_x"] * t + row["radius"] * np.cos(angle)
    y = row["anchor_y"] + row["velocity_y"] * t + row["radius"] * np.sin(angle)
    scale = row["scale0"] * (row["scale1"] / row["scale0"]) ** (t / (frames - 1))
    return x, y, scale


def render_video(row: Mapping, world: ToyWorld) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, S, S, 3) and foreground mask bool (T, S, S) of one factor-table row.

    frame = (1 - opacity) * background + opacity * colour, with the digit's opacity map placed at
    the trajectory by bilinear sampling and the background a bilinear (sub-pixel) panning crop.
    """
    opacity = _object_opacity(row, world)[..., None]
    colour = np.array([row["colour_r"], row["colour_g"], row["colour_b"]], np.float32) / 255
    frames = (1.0 - opacity) * _background(row, world) + opacity * colour
    return np.rint(frames * 255).astype(np.uint8), opacity[..., 0] >= MASK_OPACITY


def _triangle_weights(coordinate: np.ndarray, length: int) -> np.ndarray:
    """Bilinear weights (..., length) of sampling a length-long axis at `coordinate` (zero outside)."""
    return np.maximum(0.0, 1.0 - np.abs(coordinate[..., None] - np.arange(length)))


def _object_opacity(row: Mapping, world: ToyWorld) -> np.ndarray:
    """The digit's opacity (T, S, S) in [0, 1], its 8x8 box centred on the trajectory.

    Bilinear sampling is separable, so each frame is Wy @ digit @ Wx.T with per-frame weight
    matrices (T, S, 8): two batched matrix products for the whole video.
    """
    x, y, scale = trajectory(row, world.frames)
    side = OBJECT_SIDE * world.px * scale
    pixel = np.arange(world.size) + 0.5
    # Frame pixel -> digit pixel coordinate (8 digit pixels span `side` frame pixels; digit pixel
    # centres sit at 0..7).
    column = (pixel - x[:, None]) / side[:, None] * 8 + 3.5
    line = (pixel - y[:, None]) / side[:, None] * 8 + 3.5
    digit = _digits()[0][row["digit_index"]]
    weights_y = _triangle_weights(line, 8).astype(np.float32)
    weights_x = _triangle_weights(column, 8).astype(np.float32)
    return weights_y @ digit.astype(np.float32) @ weights_x.transpose(0, 2, 1)


def _background(row: Mapping, world: ToyWorld) -> np.ndarray:
    """The panning crop of the scene photograph, float32 (T, S, S, 3), bilinear between pixels."""
    photo, size = _photo(row["scene"], world.size), world.size
    t = np.arange(world.frames)
    x, y = row["crop_x"] + row["pan_x"] * t, row["crop_y"] + row["pan_y"] * t
    left, top = np.floor(x).astype(int), np.floor(y).astype(int)
    # One pixel larger than the frame, for the neighbours of the sub-pixel shift.
    patches = np.stack([photo[i:i + size + 1, j:j + size + 1] for i, j in zip(top, left)])
    fx = (x - left).astype(np.float32)[:, None, None, None]
    fy = (y - top).astype(np.float32)[:, None, None, None]
    rows = (1 - fx) * patches[:, :, :-1] + fx * patches[:, :, 1:]
    return (1 - fy) * rows[:, :-1] + fy * rows[:, 1:]


# ------------------------------------------------------------------------------------------------
# On disk: render, write, read back.
# ------------------------------------------------------------------------------------------------

WORLD_FILES = ("toyworld.json", "manifest.csv", "masks.npz", "splits", "videos")


@contextlib.contextmanager
def world_lock(out_dir: str | os.PathLike):
    """Held while a world in `out_dir` is checked or rendered. Several processes may ask for the
    same world at once (the ranks of a torchrun job, two runs started together): one renders, the
    others wait here and then find its world complete, instead of deleting files it is writing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def render_toyworld(out_dir: str | os.PathLike, *, progress: bool = True, **world_args) -> dict:
    """Render the world `ToyWorld(**world_args)` into `out_dir` (the layout in the module docstring).

    Replaces a previous world there (only the files listed in WORLD_FILES; anything else in
    `out_dir`, e.g. a decoded-video cache, is left alone). toyworld.json is removed first and
    written last, so an interrupted render leaves no toyworld.json and `ensure_toyworld` redoes it.
    Returns the summary (see `summarize`) plus "seconds" and "rendered": True.
    """
    with world_lock(out_dir):
        return _render(Path(out_dir), ToyWorld(**world_args), progress)


def _render(out: Path, world: ToyWorld, progress: bool) -> dict:
    """`render_toyworld` with its lock held by the caller."""
    started = time.perf_counter()
    for name in WORLD_FILES:  # toyworld.json first
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    rows = draw_factors(world)

    def render_and_write(row: dict) -> np.ndarray:
        frames, mask = render_video(row, world)
        write_video(out / "videos" / row["path"], frames, FPS)
        return np.packbits(mask, axis=-1)

    # Threads, not processes: numpy and the H.264 encoder release the GIL, and nothing is forked.
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        packed = list(tqdm(pool.map(render_and_write, rows), total=len(rows), unit="video",
                           desc=f"rendering {out}", disable=not progress))
    np.savez_compressed(out / "masks.npz", **{row["path"]: m for row, m in zip(rows, packed)})
    _write_splits(out / "splits", rows)
    with open(out / "manifest.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    summary = {**summarize(rows), "seconds": round(time.perf_counter() - started, 2)}
    record = {"version": VERSION, "world": dataclasses.asdict(world), "summary": summary}
    partial = out / "toyworld.json.partial"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, out / "toyworld.json")
    return {**summary, "rendered": True}


def ensure_toyworld(out_dir: str | os.PathLike, *, progress: bool = True, **world_args) -> dict:
    """Render the world into `out_dir` unless a complete world of the same version and arguments
    is already there. Returns the summary, with "rendered" telling whether it rendered now."""
    world = ToyWorld(**world_args)

    def found(record: dict) -> dict | None:
        """The summary of `record` when it is this world's, else None."""
        if record.get("version") == VERSION and record.get("world") == dataclasses.asdict(world):
            return {**record["summary"], "rendered": False}
        return None

    # Checked without the lock first, so a complete world in a read-only folder is simply used.
    if summary := found(read_world_record(out_dir)):
        return summary
    with world_lock(out_dir):
        record = read_world_record(out_dir)
        if summary := found(record):  # rendered by another process while this one waited
            return summary
        if record:
            logger.warning("%s holds a toy world made with other arguments (%s); rendering %s over it",
                           out_dir, record.get("world"), dataclasses.asdict(world))
        return _render(Path(out_dir), world, progress)


def read_world_record(out_dir: str | os.PathLike) -> dict:
    """The contents of out_dir/toyworld.json ({} when missing or unreadable: not a complete world)."""
    try:
        return json.loads((Path(out_dir) / "toyworld.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_splits(split_dir: Path, rows: list[dict]) -> None:
    """classInd.txt (1-based `<idx> <Class>`), trainlist01.txt (`<path> <idx>`), testlist01.txt."""
    split_dir.mkdir(parents=True, exist_ok=True)
    lines = {
        "classInd.txt": [f"{i + 1} {class_name(a)}" for i, a in enumerate(ACTIONS)],
        "trainlist01.txt": [f"{r['path']} {r['label'] + 1}" for r in rows if r["split"] == "train"],
        "testlist01.txt": [r["path"] for r in rows if r["split"] == "test"],
    }
    for name, content in lines.items():
        (split_dir / name).write_text("".join(line + "\n" for line in content))


def summarize(rows: list[dict]) -> dict:
    """Counts per split and class, and the measured home-scene rate of each split."""
    counts = {split: dict(sorted(Counter(class_name(r["action"]) for r in rows
                                         if r["split"] == split).items()))
              for split in ("train", "test")}
    home_rate = {split: float(np.mean([r["home_scene"] for r in rows if r["split"] == split]))
                 for split in ("train", "test")}
    return {"videos": len(rows), "counts": counts, "home_scene_rate": home_rate}


def load_manifest(out_dir: str | os.PathLike) -> list[dict]:
    """manifest.csv as a list of rows, typed as in COLUMNS (errors name the file and line)."""
    path = Path(out_dir) / "manifest.csv"
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames != list(COLUMNS):
            raise UserError(f"expected the columns {list(COLUMNS)}, got {reader.fieldnames}", path, 1)
        rows = []
        for line, raw in enumerate(reader, start=2):
            try:
                rows.append({key: COLUMNS[key](value) for key, value in raw.items()})
            except (TypeError, ValueError) as error:
                raise UserError(str(error), path, line) from None
        return rows


class Masks(Mapping):
    """The foreground masks of a rendered world: masks[path] -> bool (T, S, S), read lazily.

    `path` is the video's path relative to videos/ (the manifest's and the split files' path).
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.packed = np.load(Path(out_dir) / "masks.npz")

    def __getitem__(self, path: str) -> np.ndarray:
        packed = self.packed[path]
        return np.unpackbits(packed, axis=-1, count=packed.shape[1]).astype(bool)

    def __iter__(self):
        return iter(self.packed.files)

    def __len__(self) -> int:
        return len(self.packed.files)


# ------------------------------------------------------------------------------------------------
# `hdc data toyworld`
# ------------------------------------------------------------------------------------------------

def add_toyworld_parser(subparsers) -> argparse.ArgumentParser:
    """Add `toyworld` to the `hdc data` subcommands (runs `cmd_toyworld`)."""
    defaults = ToyWorld()
    parser = subparsers.add_parser(
        "toyworld", help="render the embedded toy world (UCF101 layout)",
        description="Render the toy world into DIR, unless the same world is already there.")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--videos-per-class", type=int, default=defaults.videos_per_class)
    parser.add_argument("--bias", type=float, default=defaults.bias,
                        help="scene bias of the train split (0: none)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--size", type=int, default=defaults.size, help="frame side in pixels")
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames per video")
    parser.add_argument("--force", action="store_true", help="render even if up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_toyworld)
    return parser


def cmd_toyworld(args: argparse.Namespace) -> int:
    """Render (or find up to date) the world the arguments describe and print its summary."""
    world_args = {"videos_per_class": args.videos_per_class, "bias": args.bias,
                  "seed": args.seed, "size": args.size, "frames": args.frames}
    make = render_toyworld if args.force else ensure_toyworld
    summary = make(args.out, progress=not args.no_progress, **world_args)
    print(format_summary(summary, ToyWorld(**world_args), args.out))
    return 0


def format_summary(summary: dict, world: ToyWorld, out_dir: str | os.PathLike) -> str:
    """A few readable lines: what was made (or found), counts per class and split, scene bias."""
    state = f"rendered in {summary['seconds']:.1f} s" if summary["rendered"] else "already up to date"
    counts = summary["counts"]
    width = max(len(name) for name in counts["train"])
    lines = [f"toy world in {out_dir}: {summary['videos']} videos, {world.size}x{world.size}, "
             f"{world.frames} frames ({state})",
             f"  {'class':<{width}}  train  test"]
    lines += [f"  {name:<{width}}  {counts['train'][name]:>5}  {counts['test'].get(name, 0):>4}"
              for name in counts["train"]]
    rate = summary["home_scene_rate"]
    lines.append(f"  home-scene rate: train {rate['train']:.3f} (expected "
                 f"{expected_home_rate(world.bias):.3f} at bias {world.bias}), test "
                 f"{rate['test']:.3f} (uniform: {1 / len(SCENES):.3f})")
    return "\n".join(lines)
