"""The foreground activation ratio against a naive loop, and with an unreadable video skipped."""
import numpy as np
import torch

from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.probes import foreground_ratio

T, S = 4, 8


class MapIsTheInput(torch.nn.Module):
    """A 'backbone' whose last-stage feature map is its input, so A(p) is known exactly."""
    stage_names = ("last",)

    def features(self, clips, stages):
        return {"last": clips}


def as_model_input(videos):  # (B, T, H, W, 3) uint8 -> (B, 1, T, H, W): channel 0 as the map
    return videos[..., 0].float()[:, None]


class FakeVideos:
    """Position i shows video paths[i]; `unreadable` positions return the next video, as the real
    datasets do with on_error="skip" (the item's "index" says which one was loaded)."""

    def __init__(self, videos, unreadable=()):
        self.videos, self.unreadable = videos, set(unreadable)
        self.samples = [(f"/world/videos/class/v{i}.mp4", 0) for i in range(len(videos))]

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        loaded = i + 1 if i in self.unreadable else i
        return {"video": torch.from_numpy(self.videos[loaded])[None], "index": loaded}


def world(seed=0, n=3):
    """n videos with an object mask each, in different places; the activation is 1 on the object, 0.2 elsewhere,
    plus noise, so each video's ratio is well above 1 with its own mask and lower with another's."""
    rng = np.random.default_rng(seed)
    masks, videos = {}, []
    for i in range(n):
        mask = np.zeros((T, S, S), dtype=bool)
        top, left = [(0, 0), (5, 5), (0, 5), (5, 0)][i % 4]  # objects apart from one another
        mask[:, top:top + 3, left:left + 3] = True
        activation = np.where(mask, 200, 40) + rng.integers(0, 20, size=mask.shape)
        videos.append(np.repeat(activation[..., None], 3, axis=-1).astype(np.uint8))
        masks[f"class/v{i}.mp4"] = mask
    return videos, masks


def naive_ratio(videos, masks, pairs):
    """Mean over (video, mask) pairs of (sum_p A m / sum_p A) / mean_p m."""
    ratios = []
    for video, mask in pairs:
        a = videos[video][..., 0].astype(np.float64)
        m = masks[f"class/v{mask}.mp4"].astype(np.float64)
        ratios.append((a * m).sum() / a.sum() / m.mean())
    return float(np.mean(ratios))


def test_foreground_ratio_matches_a_naive_loop():
    videos, masks = world()
    got = foreground_ratio(MapIsTheInput(), FakeVideos(videos), masks, as_model_input, "cpu",
                           UniformClipSampler(T, 1, 1), batch_size=2)
    assert got > 2
    np.testing.assert_allclose(got, naive_ratio(videos, masks, [(0, 0), (1, 1), (2, 2)]), rtol=1e-5)


def test_a_skipped_video_is_scored_with_the_mask_of_the_video_that_replaced_it():
    videos, masks = world(seed=1)
    got = foreground_ratio(MapIsTheInput(), FakeVideos(videos, unreadable={1}), masks, as_model_input,
                           "cpu", UniformClipSampler(T, 1, 1))
    np.testing.assert_allclose(got, naive_ratio(videos, masks, [(0, 0), (2, 2), (2, 2)]), rtol=1e-5)
    by_position = naive_ratio(videos, masks, [(0, 0), (2, 1), (2, 2)])  # video 2 under video 1's mask
    assert abs(got - by_position) > 0.1
