"""The factor probes against naive references on synthetic features whose answers are known; the
foreground activation ratio against a naive loop, and with an unreadable video skipped."""
import functools

import numpy as np
import pytest
import torch
from test_evaluate import naive_cv_probe, naive_folds, scikit_learn_on_one_thread  # noqa: F401 (a fixture)

from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib import probes
from hdc_lib.data.toyworld import ACTIONS
from hdc_lib.probes import (CHANCE, TIME_REVERSED_PAIRS, cross_fitted_predictions, factor_probes,
                            foreground_ratio)

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


# -- factor probes ---------------------------------------------------------------------------------
PAIRS = [("anticlockwise", "clockwise"), ("down", "up"), ("grow", "shrink"), ("left", "right")]


def one_hot(ids, size, scale=2.0):
    return scale * torch.nn.functional.one_hot(ids, size).double()


def synthetic_videos(seed=0, test_per_class=25, train_per_class=30):
    """Test videos with independent action, object and scene; train videos whose scene is their
    action's home scene 80% of the time (the toy world's bias). Two levels of features:
    layer2 "motion": the direction inside the action's time-reversed pair on one dimension and the
    scene on eight, no object; layer3 "first frame": what one frame shows, object and scene, no
    direction. Plus noise dimensions on both."""
    g = torch.Generator().manual_seed(seed)
    second_of_pair = torch.tensor([float(any(a == b for _, b in PAIRS)) for a in ACTIONS])

    def videos(per_class, biased):
        action = torch.arange(len(ACTIONS)).repeat_interleave(per_class)
        scene = torch.randint(0, 8, (len(action),), generator=g)
        if biased:
            home = torch.rand(len(action), generator=g) < 0.8
            scene = torch.where(home, action % 8, scene)
        obj = torch.randint(0, 10, (len(action),), generator=g)
        noise = lambda d: 0.5 * torch.randn(len(action), d, generator=g, dtype=torch.float64)  # noqa: E731
        motion = torch.cat([one_hot(second_of_pair[action].long(), 2), one_hot(scene, 8)], 1)
        frame = torch.cat([one_hot(obj, 10), one_hot(scene, 8)], 1)
        features = {"layer2": torch.cat([motion, noise(4)], 1) + noise(14),
                    "layer3": torch.cat([frame, noise(2)], 1) + noise(20)}
        return features, {"action": action, "object": obj, "scene": scene}

    return videos(train_per_class, True), videos(test_per_class, False)


def naive_cross_fit(x, y):
    """Halves stratified by class; each half's probe scores the other half; pooled accuracy."""
    half = np.array(naive_folds(list(y), 2))
    correct = 0
    for h in (0, 1):
        _, _, predicted = naive_cv_probe(x[half == h], y[half == h], x[half != h])
        correct += (predicted == y[half != h]).sum()
    return correct / len(y)


def test_k_fold_cross_fitted_predictions_match_a_naive_loop_over_the_folds(monkeypatch):
    """Each item predicted by the probe fitted on the other k-1 folds, at every level."""
    _, (test, factors) = synthetic_videos(test_per_class=12)
    monkeypatch.setattr(probes, "fit_probes", functools.partial(probes.fit_probes, tolerance=1e-7))
    y = factors["scene"]
    predicted = cross_fitted_predictions([test["layer2"], test["layer3"]], y, folds=4)
    fold = np.array(naive_folds(y.tolist(), 4))
    for level, stage in enumerate(("layer2", "layer3")):
        x = test[stage].numpy()
        naive = np.empty(len(y), dtype=int)
        for f in range(4):
            naive[fold == f] = naive_cv_probe(x[fold != f], y.numpy()[fold != f], x[fold == f])[2]
        assert (predicted[level].numpy() == naive).all(), stage


def naive_direction(x, actions):
    accuracies = []
    for a, b in PAIRS:
        members = (actions == ACTIONS.index(a)) | (actions == ACTIONS.index(b))
        accuracies.append(naive_cross_fit(x[members], (actions[members] == ACTIONS.index(b)).astype(int)))
    return float(np.mean(accuracies))


def test_the_time_reversed_pairs_are_the_worlds():
    assert sorted(TIME_REVERSED_PAIRS) == sorted(tuple(sorted((ACTIONS.index(a), ACTIONS.index(b))))
                                                 for a, b in PAIRS)


@pytest.mark.slow
def test_every_probe_at_every_level_matches_its_naive_reference_and_the_known_answer(monkeypatch):
    (train, train_factors), (test, factors) = synthetic_videos()
    # Both solvers converged tightly, so that no point on a decision boundary can flip between them.
    monkeypatch.setattr(probes, "fit_probes", functools.partial(probes.fit_probes, tolerance=1e-7))
    results = factor_probes(train, train_factors["action"], test, factors)
    for stage in ("layer2", "layer3"):
        x_train, x_test = train[stage].numpy(), test[stage].numpy()
        action, y_train = factors["action"].numpy(), train_factors["action"].numpy()
        naive = {"action_biased": (naive_cv_probe(x_train, y_train, x_test)[2] == action).mean(),
                 "action_unbiased": naive_cross_fit(x_test, action),
                 "direction": naive_direction(x_test, action),
                 "object": naive_cross_fit(x_test, factors["object"].numpy()),
                 "scene": naive_cross_fit(x_test, factors["scene"].numpy())}
        for probe, value in naive.items():
            assert results[f"{probe}@{stage}"] == pytest.approx(value, abs=1e-12), (probe, stage)
    for probe in CHANCE:
        assert results[probe] == results[f"{probe}@layer3"]  # the headline is the last stage
    # The answers the features were built to give.
    assert results["direction@layer2"] > 0.95
    assert results["direction@layer3"] == pytest.approx(CHANCE["direction"], abs=0.1)  # no frame shows it
    assert results["action_unbiased@layer2"] == pytest.approx(0.25, abs=0.1)  # direction, not which pair
    assert results["scene@layer2"] > 0.9 and results["scene@layer3"] > 0.9
    assert results["object@layer3"] > 0.9 and results["object@layer2"] < 0.25


def test_the_static_control_is_scored_against_the_mask_of_the_frame_it_sees():
    """A model tested on the first frame repeated (`still_frame`) sees the object where frame 0 has
    it, so the ratio uses frame 0's mask on every frame, not the moving masks of the clip."""
    from hdc_lib.supervised import still

    rng = np.random.default_rng(2)
    videos, masks = [], {}
    for i in range(3):
        mask = np.zeros((T, S, S), dtype=bool)
        for t in range(T):  # the object walks along the diagonal
            mask[t, t % (S - 2):t % (S - 2) + 3, t % (S - 2):t % (S - 2) + 3] = True
        activation = np.where(mask, 200, 40) + rng.integers(0, 20, size=mask.shape)
        videos.append(np.repeat(activation[..., None], 3, axis=-1).astype(np.uint8))
        masks[f"class/v{i}.mp4"] = mask
    still_input = lambda clips: as_model_input(still(clips))  # noqa: E731
    got = foreground_ratio(MapIsTheInput(), FakeVideos(videos), masks, still_input, "cpu",
                           UniformClipSampler(T, 1, 1), still_frame=True)
    frozen = [np.repeat(v[:1], T, axis=0) for v in videos]
    frozen_masks = {k: np.repeat(m[:1], T, axis=0) for k, m in masks.items()}
    np.testing.assert_allclose(got, naive_ratio(frozen, frozen_masks, [(0, 0), (1, 1), (2, 2)]), rtol=1e-5)
    assert got > 2
    moving_masks = foreground_ratio(MapIsTheInput(), FakeVideos(videos), masks, still_input, "cpu",
                                    UniformClipSampler(T, 1, 1))
    assert moving_masks < got - 0.5  # the old scoring: the still object against masks that move


def test_scene_following_errors_count_what_they_name():
    # 8 test videos of actions 0..7 in scenes (0, 1, 5, 3, 4, 5, 2, 7): all but videos 2 and 6 sit in
    # their own action's home scene (scene i for action i).
    labels = torch.arange(8)
    scenes = torch.tensor([0, 1, 5, 3, 4, 5, 2, 7])
    # Right on 0, 1, 3, 5; video 2 called 5 and video 6 called 2 (both in the called class's home
    # scene), video 4 called 6 (scene 4: not 6's home), video 7 called 0 (scene 7: not 0's home).
    predicted = torch.tensor([0, 1, 5, 3, 6, 5, 2, 0])
    got = probes.scene_following_errors(labels, predicted, scenes)
    assert got["accuracy"] == 4 / 8 and got["errors"] == 4
    assert got["errors in the predicted class's home scene"] == 2
    assert got["share of errors (chance 0.125)"] == 2 / 4
    assert got["videos in their own home scene"] == 6
    assert got["accuracy, video in its own home scene"] == 4 / 6   # 0, 1, 3, 5 right; 4, 7 wrong
    assert got["accuracy, video in another scene"] == 0 / 2        # 2 and 6 wrong


def test_own_classifier_predictions_are_each_videos_clip_averaged_logits(tiny_overrides):
    """The batched logits equal one video at a time through the model's test view, and the labels
    and scenes are the manifest's, in dataset order."""
    from hdc_lib.data.toyworld import load_manifest
    from hdc_lib.experiment import build_method, load_config
    from hdc_lib.features import eval_transform
    from hdc_lib.probes import own_classifier_predictions, relative_path

    for config in ("supervised", "supervised_static"):
        cfg = load_config(f"configs/toy/{config}.yaml", tiny_overrides)
        torch.manual_seed(0)
        model = build_method(cfg, num_classes=len(ACTIONS)).eval()
        got = own_classifier_predictions(model, cfg, "cpu", num_clips=2, batch_size=3)
        test_set = got["test_set"]
        manifest = {row["path"]: row for row in load_manifest(cfg.data.root)}
        with torch.no_grad():
            for i in range(len(test_set)):
                item = test_set[i]
                alone = model.classifier(model.backbone(eval_transform(model)(item["video"]))).mean(0)
                torch.testing.assert_close(got["logits"][i], alone, atol=1e-5, rtol=1e-5)
                row = manifest[relative_path(test_set, i)]
                assert got["labels"][i] == item["label"] == row["label"]
                assert got["scenes"][i] == row["scene_id"]
