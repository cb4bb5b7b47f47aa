"""Clip samplers: shapes, ranges, distinct starts, the stride knob, looping, determinism."""
from pathlib import Path

import numpy as np
import pytest

from hdc_lib.data.samplers import RandomClipSampler, UniformClipSampler

REPO = Path(__file__).resolve().parents[1]


def starts_and_strides(indices):
    return indices[:, 0], indices[:, 1] - indices[:, 0]


def test_random_windows_are_in_range_and_contiguous():
    sampler = RandomClipSampler(num_frames=8, stride=2, num_clips=3)
    for seed in range(20):
        indices, looped = sampler.sample(40, np.random.default_rng(seed))
        assert indices.shape == (3, 8) and indices.dtype == np.int64 and not looped
        assert (indices >= 0).all() and (indices < 40).all()
        assert (np.diff(indices, axis=1) == 2).all()  # windows of stride 2, no wrap
        assert len(set(indices[:, 0])) == 3  # distinct starts


def test_random_starts_cover_every_fitting_start_uniformly():
    sampler = RandomClipSampler(num_frames=4)
    rng = np.random.default_rng(0)
    starts = [sampler(10, rng)[0, 0] for _ in range(3500)]
    counts = np.bincount(starts, minlength=10)
    assert counts[7:].sum() == 0  # a window starting at 7 would not fit in 10 frames
    assert counts[:7].min() > 400  # each of the 7 fitting starts drawn about 500 times


def test_starts_are_distinct_whenever_there_are_enough():
    sampler = RandomClipSampler(num_frames=5, num_clips=4)
    for seed in range(50):  # exactly 4 fitting starts in an 8-frame video
        assert sorted(sampler(8, np.random.default_rng(seed))[:, 0]) == [0, 1, 2, 3]


def test_stride_tuple_draws_each_speed_per_clip():
    sampler = RandomClipSampler(num_frames=4, stride=(1, 2, 4), num_clips=2)
    rng = np.random.default_rng(1)
    strides = np.concatenate([starts_and_strides(sampler(100, rng))[1] for _ in range(200)])
    assert set(strides) == {1, 2, 4}
    assert sampler.span == 13


def test_random_sampler_is_deterministic_given_the_generator():
    sampler = RandomClipSampler(num_frames=6, stride=(1, 2), num_clips=2)
    first = sampler(50, np.random.default_rng(7))
    np.testing.assert_array_equal(first, sampler(50, np.random.default_rng(7)))
    others = [sampler(50, np.random.default_rng(seed)) for seed in range(8, 12)]
    assert any((other != first).any() for other in others)


def test_short_videos_loop_and_say_so():
    sampler = RandomClipSampler(num_frames=8, num_clips=2)
    indices, looped = sampler.sample(5, np.random.default_rng(0))
    assert looped and (indices < 5).all()
    for clip in indices:  # each window continues from the start of the video after the end
        np.testing.assert_array_equal(clip, (clip[0] + np.arange(8)) % 5)
    assert indices[0, 0] != indices[1, 0]
    one_frame, looped = sampler.sample(1, np.random.default_rng(0))
    assert looped and (one_frame == 0).all()
    assert not sampler.sample(8, np.random.default_rng(0))[1]  # exactly fits: no loop


def test_uniform_windows_are_evenly_spaced_and_span_the_video():
    sampler = UniformClipSampler(num_frames=4, stride=2, num_clips=3)
    indices, looped = sampler.sample(27)
    assert not looped and indices.shape == (3, 4)
    np.testing.assert_array_equal(indices[:, 0], [0, 10, 20])  # last window ends the video
    assert indices[-1, -1] == 26
    np.testing.assert_array_equal(indices, sampler(27, np.random.default_rng(5)))


def test_uniform_sampler_on_a_short_video_spreads_looping_starts():
    indices, looped = UniformClipSampler(num_frames=6, num_clips=3).sample(4)
    assert looped
    np.testing.assert_array_equal(indices[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(indices[1], [1, 2, 3, 0, 1, 2])


@pytest.mark.parametrize("make", [lambda: RandomClipSampler(4, stride=0),
                                  lambda: RandomClipSampler(4, stride=(1, -1)),
                                  lambda: UniformClipSampler(4, stride=0)])
def test_invalid_strides_are_rejected(make):
    with pytest.raises(ValueError, match="stride"):
        make()


def test_empty_video_is_rejected():
    with pytest.raises(ValueError, match="at least one frame"):
        RandomClipSampler(4)(0, np.random.default_rng(0))


def test_windows_do_not_overlap_when_the_video_holds_them_all():
    sampler = RandomClipSampler(num_frames=8, stride=(1, 2), num_clips=2, disjoint=True)  # spans 8 or 15
    rng = np.random.default_rng(0)
    for _ in range(500):
        indices, looped = sampler.sample(32, rng)  # the toy world: 15 + 15 <= 32
        assert not looped
        (a0, a1), (b0, b1) = [(clip[0], clip[-1]) for clip in indices]
        assert a1 < b0 or b1 < a0, indices


def test_disjoint_layouts_are_uniform_and_in_both_orders():
    # Two windows of 3 frames in 8: 2 spare frames over 3 gaps (6 ways) x 2 orders = 12 layouts.
    sampler = RandomClipSampler(num_frames=3, num_clips=2, disjoint=True)
    rng = np.random.default_rng(1)
    layouts = [tuple(sampler(8, rng)[:, 0]) for _ in range(6000)]
    counts = {layout: layouts.count(layout) for layout in set(layouts)}
    by_hand = {(a, b) for a in range(6) for b in range(6) if abs(a - b) >= 3}
    assert set(counts) == by_hand and len(by_hand) == 12
    assert min(counts.values()) > 400 and max(counts.values()) < 600  # about 500 each


@pytest.mark.parametrize("disjoint, frames", [(True, 24), (False, 32)])
def test_windows_may_overlap_when_they_cannot_all_fit_or_may_overlap(disjoint, frames):
    sampler = RandomClipSampler(num_frames=8, stride=2, num_clips=2, disjoint=disjoint)  # spans 15
    rng = np.random.default_rng(2)
    draws = [sampler(frames, rng) for _ in range(300)]
    assert all(d[0, 0] != d[1, 0] and d.max() < frames for d in draws)
    assert any(abs(int(d[0, 0]) - int(d[1, 0])) < 15 for d in draws)  # overlap happens


def test_paper_presets_ask_for_disjoint_windows_and_toy_presets_for_nearby_ones():
    """The paper presets keep the specified views (disjoint windows, no channel shuffle); the toy
    presets start the windows 2-8 frames apart, DCLR's included; DCLR's paper presets use its official
    sampler (two distinct starts anywhere)."""
    from hdc_lib.experiment import build_method, load_config

    for name in ("coupled", "hdc"):
        paper = load_config(REPO / f"configs/ucf101/{name}_r2plus1d.yaml")
        sampler = RandomClipSampler(**build_method(paper).clip_request())
        assert sampler.disjoint and sampler.offset is None, name
        assert paper.model.augment.channel_shuffle_p == 0.0
        toy = RandomClipSampler(**build_method(load_config(REPO / f"configs/toy/{name}.yaml")).clip_request())
        assert toy.offset == (2, 8) and not toy.disjoint, name
    for path in ("configs/ucf101/dclr_r2plus1d.yaml", "configs/kinetics400/dclr_r2plus1d.yaml"):
        sampler = RandomClipSampler(**build_method(load_config(REPO / path)).clip_request())
        assert not sampler.disjoint and sampler.offset is None, path
    toy = RandomClipSampler(**build_method(load_config(REPO / "configs/toy/dclr.yaml")).clip_request())
    assert toy.offset == (2, 8) and not toy.disjoint
    for path in sorted(REPO.glob("configs/*/*_r2plus1d.yaml")):
        assert load_config(path).model.augment.channel_shuffle_p == 0.0, path


def test_window_offset_sets_how_far_apart_the_windows_start():
    sampler = RandomClipSampler(num_frames=8, stride=2, num_clips=2, offset=(2, 8))  # spans 15
    rng = np.random.default_rng(3)
    draws = [sampler.sample(32, rng) for _ in range(3000)]
    gaps = np.array([int(d[1, 0]) - int(d[0, 0]) for d, _ in draws])
    assert not any(looped for _, looped in draws)
    assert set(np.abs(gaps)) == set(range(2, 9))  # every offset 2..8 and no other
    assert abs((gaps > 0).mean() - 0.5) < 0.05  # either window may come first
    # the pair is placed uniformly where it fits: its first start covers 0 .. 32 - (15 + gap)
    first = np.array([min(d[0, 0], d[1, 0]) for d, _ in draws])
    assert first.min() == 0 and first.max() == 32 - 17
    # too short a video for the pair: the windows still start apart (the overlapping rule)
    short = [sampler(16, rng) for _ in range(200)]
    assert all(d[0, 0] != d[1, 0] for d in short)


@pytest.mark.parametrize("bad", [dict(offset=(0, 3)), dict(offset=(4, 2)), dict(offset=(2, 3), disjoint=True)])
def test_bad_window_offsets_are_refused(bad):
    with pytest.raises(ValueError):
        RandomClipSampler(num_frames=4, num_clips=2, **bad)


def test_the_window_offset_knob_reaches_the_sampler():
    from hdc_lib.experiment import build_method, load_config

    for name in ("coupled", "hdc"):
        cfg = load_config(REPO / f"configs/toy/{name}.yaml", ["model.window_offset=[3,5]"])
        sampler = RandomClipSampler(**build_method(cfg).clip_request())
        assert sampler.offset == (3, 5) and not sampler.disjoint, name
        cfg = load_config(REPO / f"configs/toy/{name}.yaml", ["model.window_offset=null"])
        assert RandomClipSampler(**build_method(cfg).clip_request()).disjoint, name
