"""Where a map lies on the object, clip by clip (hdc_lib.probes.foreground_ratios, clips_and_masks),
and the grid of every level's map (hdc_lib.viz.level_maps, map_grid): the ratios against a naive
count in pixels, the clips and masks read together, the maps normalised, the grid's panels."""
import types

import numpy as np
import torch
from matplotlib.figure import Figure

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.backbones import build_backbone
from hdc_lib.dclr import activation_map
from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.probes import clips_and_masks, foreground_ratios
from hdc_lib.viz import frame_maps, full_frame_view, level_maps, map_grid


def pixel_ratio(amap, mask):
    """Notebook 06's count in pixels: every map cell spread over the pixels it covers, then the map's
    mass on object pixels over its total, divided by the object's share of the pixels."""
    reps = [n // k for n, k in zip(mask.shape, amap.shape)]
    spread = np.kron(amap.numpy().astype(np.float64), np.ones(reps))
    m = mask.numpy().astype(np.float64)
    if m.sum() == 0 or spread.sum() == 0:
        return float("nan")
    return (spread * m).sum() / spread.sum() / m.mean()


def test_foreground_ratios_match_a_count_in_pixels():
    g = torch.Generator().manual_seed(0)
    amaps = torch.rand(4, 2, 4, 4, generator=g)
    masks = torch.zeros(4, 8, 32, 32, dtype=torch.bool)
    masks[0, :, 3:13, 20:29] = True                       # an object not aligned with the 8 px cells
    masks[1, 2:5, 0:30, 5:7] = True                        # in a few frames only
    masks[3, :, 10:20, 10:20] = True
    amaps[3] = 0                                           # a silent map
    got = foreground_ratios(amaps, masks)
    naive = [pixel_ratio(a, m) for a, m in zip(amaps, masks)]
    np.testing.assert_allclose(got[:2], naive[:2], rtol=1e-5)
    assert np.isnan(got[2]) and np.isnan(got[3])           # no object; no activation: nothing to measure
    hot = torch.full((1, 2, 4, 4), 0.1)
    hot[0, :, :2, 2:] = 5.0                                # the map is high where masks[0]'s object mostly is
    assert foreground_ratios(hot, masks[:1])[0] > 2


class Videos:
    """A toy dataset: item i is video i's 12 frames (its index in every pixel), with item 1 unreadable
    and replaced by video 2, as the real datasets do with on_error="skip"."""

    samples = [(f"/world/videos/class/v{i}.mp4", 0) for i in range(3)]

    def __init__(self, sampler):
        self.sampler = sampler

    def __len__(self):
        return 3

    def __getitem__(self, i):
        loaded = 2 if i == 1 else i
        frames = torch.arange(12).view(12, 1, 1, 1).expand(12, 4, 4, 3) + 20 * loaded
        return {"video": frames[self.sampler(12)].to(torch.uint8), "index": loaded}


def test_clips_and_masks_read_the_same_frames_of_the_same_video():
    sampler = UniformClipSampler(4, 2, num_clips=1)
    masks = {f"class/v{i}.mp4": (torch.arange(12).view(12, 1, 1) + 20 * i == torch.full((12, 4, 4), 20 * i + 6)).numpy()
             for i in range(3)}                            # each video's object is in its frame 6 only
    clips, clip_masks = clips_and_masks(Videos(sampler), [0, 1, 2], masks, sampler)
    frames = sampler(12)[0]
    assert clips.shape == (3, 4, 4, 4, 3) and clip_masks.shape == (3, 4, 4, 4)
    for clip, mask in zip(clips, clip_masks):              # the object where the clip shows frame 6
        assert torch.equal(mask.any(dim=(1, 2)), clip[:, 0, 0, 0] % 20 == 6)
    assert torch.equal(clips[1], clips[2])                 # the unreadable video's replacement, with its mask
    assert torch.equal(clip_masks[1], clip_masks[2]) and 6 in frames
    still, still_masks = clips_and_masks(Videos(sampler), [0], masks, sampler, still_frame=True)
    assert torch.equal(still[0], clips[0, :1].expand_as(clips[0]))
    assert torch.equal(still_masks[0], clip_masks[0, :1].expand_as(clip_masks[0]))


def model_and_clips(seed=0):
    torch.manual_seed(seed)
    model = types.SimpleNamespace(backbone=build_backbone("tiny"), augment=SpatialAugment(AugmentConfig(size=32)))
    clips = torch.randint(0, 256, (2, 8, 48, 48, 3), dtype=torch.uint8)
    clip_masks = torch.zeros(2, 8, 48, 48, dtype=torch.bool)
    clip_masks[0, :, 5:20, 30:44] = True
    clip_masks[1, 2:, 24:40, 0:12] = True
    return model, clips, clip_masks


def test_level_maps_are_normalised_frame_maps_with_each_levels_ratio():
    model, clips, clip_masks = model_and_clips()
    model.backbone.train()
    levels = ("layer1", "layer4")
    maps = level_maps(model, clips, clip_masks, levels)
    assert model.backbone.training                         # the mode is restored
    upsampled = frame_maps(model.backbone, clips, full_frame_view(model), levels)
    with torch.no_grad():
        cells = model.backbone.eval().features(full_frame_view(model)(clips), levels)
    for level in levels:
        hat = maps[level]["normalised"]
        torch.testing.assert_close(hat.mean(dim=(1, 2, 3)), torch.ones(2))              # 1 = an average position
        torch.testing.assert_close(hat * upsampled[level].mean(dim=(1, 2, 3), keepdim=True), upsampled[level])
        # the 32 px view of a 48 px frame: each map cell covers a whole block of frame pixels
        naive = [pixel_ratio(a, m) for a, m in zip(activation_map(cells[level]), clip_masks)]
        np.testing.assert_allclose(maps[level]["fg_ratio"], naive, rtol=1e-5)


def test_map_grid_draws_a_row_per_model_with_each_levels_ratio(tmp_path):
    model, clips, clip_masks = model_and_clips()
    other, _, _ = model_and_clips(seed=1)
    levels = ("layer2", "layer4")
    fig = map_grid({"a": model, "b": other}, clips, clip_masks, ["first", "second"], 3, levels, "two models",
                   path=tmp_path / "grid.jpg")
    assert isinstance(fig, Figure) and (tmp_path / "grid.jpg").stat().st_size > 0
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 2 * (1 + len(levels))        # per model and clip: the frame, then each level
    titles = [ax.get_title() for ax in panels]
    assert titles[:6] == ["first", *levels, "second", *levels] and not any(titles[6:])   # first row only
    for row, m in enumerate((model, other)):
        maps = level_maps(m, clips, clip_masks, levels)
        notes = [t.get_text() for ax in panels[6 * row:6 * row + 6] for t in ax.texts if t.get_text().startswith("fg")]
        assert notes == [f"fg {maps[level]['fg_ratio'][v]:.2f}" for v in range(2) for level in levels]
