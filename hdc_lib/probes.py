"""Toy-world probes: what a frozen backbone knows about each factor of the world, and where it looks.

The toy world records every factor of every video (manifest.csv) and the moving object's mask in
every frame (masks.npz), so the papers' claims become measurements (docs/methods.md, "Toy-world
probes"). Every linear probe is `evaluate.fit_probes`: L2 strength chosen by cross-validation
inside its fit set, never on the videos it is scored on. Each runs at every level from layer2 up
(the levels HDC taps), keyed "name@stage"; the plain name is the last stage, the headline.

- action_biased: fitted on the scene-biased train split, scored on the scene-unbiased test split.
  Does the representation resist the scene shortcut? A backbone that reads the background loses.
- action_unbiased: fitted and scored on the test split, cross-fitted on class-stratified halves
  (fit one half, score the other, and the reverse). Can the motion be read out at all?
- direction: the same, 2-way, inside each time-reversed pair (right/left, down/up, clockwise/
  anticlockwise, grow/shrink), averaged over the pairs; chance 0.5. No single frame shows it.
- object, scene: cross-fitted on halves of the test split, where both are independent of the
  action: how much appearance and background the features carry.
- retrieval R@k of test videos among train videos, by action (last stage).
- foreground activation ratio: share of activation-map mass on the moving object divided by the
  object's share of the frame (1 = no preference; above 1 = the model looks at the mover).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.data.toyworld import ACTIONS, NUM_OBJECTS, REVERSE, SCENES, Masks, load_manifest
from hdc_lib.dclr import activation_map
from hdc_lib.evaluate import fit_probes, retrieval_recall, stratified_folds
from hdc_lib.features import eval_datasets, eval_transform, extract_features
from hdc_lib.supervised import still


def relative_path(dataset, position: int) -> str:
    """A dataset item's video path relative to the world's videos/ folder (the manifest's key)."""
    path = Path(dataset.samples[position][0])
    return f"{path.parent.name}/{path.name}"


PROBES = ("action_biased", "action_unbiased", "direction", "object", "scene")
CHANCE = {"action_biased": 1 / len(ACTIONS), "action_unbiased": 1 / len(ACTIONS), "direction": 0.5,
          "object": 1 / NUM_OBJECTS, "scene": 1 / len(SCENES)}
# Each time-reversed pair once, as label ids in ACTIONS order (the datasets' class order).
TIME_REVERSED_PAIRS = tuple(sorted({tuple(sorted((ACTIONS.index(a), ACTIONS.index(REVERSE[a]))))
                                    for a in ACTIONS}))


def probe_stages(backbone) -> tuple[str, ...]:
    """The levels every probe reads: layer2 up, the ones HDC taps (layer1 is close to pixels)."""
    return tuple(backbone.stage_names[1:])


def cross_fitted_predictions(features, labels: torch.Tensor, folds: int = 2) -> torch.Tensor:
    """Every item's class at each level (features: L tensors (n, D_l)) by a probe that did not see
    it: the items dealt into class-stratified folds, each fold predicted by the probe fitted on the
    others. Returns (L, n)."""
    fold = stratified_folds(labels, folds)
    predictions = fit_probes(features, labels, torch.stack([fold != f for f in range(folds)])).predictions
    return predictions.gather(0, fold.expand(1, predictions.shape[1], -1)).squeeze(0)   # (L, n)


def cross_fitted_accuracy(features, labels: torch.Tensor) -> list[float]:
    """Accuracy at each level of probes cross-fitted on halves stratified by class: a probe fitted
    on each half scores the other, so every item is scored once, by the probe that did not see it."""
    return (cross_fitted_predictions(features, labels) == labels).double().mean(1).tolist()


def half_split_probe(features: torch.Tensor, labels: torch.Tensor) -> float:
    """`cross_fitted_accuracy` of one feature level: for factors that only the test split has unbiased."""
    return cross_fitted_accuracy([features], labels)[0]


def direction_accuracy(features, labels: torch.Tensor, pairs=TIME_REVERSED_PAIRS) -> list[float]:
    """Accuracy at each level of a 2-way probe inside each pair (a, b) of time-reversed actions,
    cross-fitted on halves of the pair's items stratified by action, averaged over the pairs."""
    fits, scores = [], []
    is_second = torch.zeros(len(labels), dtype=torch.long)
    for a, b in pairs:
        is_second[labels == b] = 1
        members = torch.nonzero((labels == a) | (labels == b)).flatten()
        second = stratified_folds(labels[members], 2) == 1
        for half in (~second, second):
            fits.append(torch.zeros(len(labels), dtype=torch.bool).index_fill(0, members[half], True))
            scores.append(torch.zeros(len(labels), dtype=torch.bool).index_fill(0, members[~half], True))
    predictions = fit_probes(features, is_second, torch.stack(fits)).predictions  # (2 per pair, L, n)
    correct = (predictions == is_second) & torch.stack(scores)[:, None]
    per_pair = correct.view(len(pairs), 2, len(features), -1).sum((1, 3)).double()  # (pairs, L)
    sizes = torch.stack(scores).view(len(pairs), 2, -1).sum((1, 2)).double()
    return (per_pair / sizes[:, None]).mean(0).tolist()


def factor_probes(train: dict[str, torch.Tensor], train_actions: torch.Tensor,
                  test: dict[str, torch.Tensor], test_factors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Every linear probe at every level. train, test: {stage: (N, D)} video features, stages shallow
    to deep; train_actions: the train videos' action ids; test_factors: the test videos' "action",
    "object" and "scene" ids. Returns "probe@stage" for every probe and stage, and "probe" for the
    last stage."""
    stages = list(test)
    x_test = [test[s] for s in stages]
    n_train = len(train_actions)
    both = [torch.cat([train[s], test[s]]) for s in stages]
    fit_on_train = torch.arange(n_train + len(x_test[0])) < n_train
    # the test actions only size the class count: fit_probes reads no label outside the fit set
    biased = fit_probes(both, torch.cat([train_actions, test_factors["action"]]), fit_on_train[None])
    on_test = biased.predictions[0][:, n_train:]  # (L, test videos)
    accuracy = {
        "action_biased": (on_test == test_factors["action"]).double().mean(1).tolist(),
        "action_unbiased": cross_fitted_accuracy(x_test, test_factors["action"]),
        "direction": direction_accuracy(x_test, test_factors["action"]),
        "object": cross_fitted_accuracy(x_test, test_factors["object"]),
        "scene": cross_fitted_accuracy(x_test, test_factors["scene"]),
    }
    results = {}
    for probe in PROBES:
        results[probe] = accuracy[probe][-1]
        results.update({f"{probe}@{stage}": a for stage, a in zip(stages, accuracy[probe])})
    return results


def clips_and_masks(dataset, positions, masks: Masks, sampler, still_frame: bool = False):
    """uint8 (N, T, H, W, C): the first clip of each item at `positions`; bool (N, T, H, W): the
    object's mask in the same frames (`sampler` is the dataset's clip sampler), looked up by the
    item's own video (an unreadable video is replaced by the next readable one). `still_frame`:
    each clip's first frame repeated (the static control's view, `supervised.still`), and that
    frame's mask repeated with it."""
    items = [dataset[i] for i in positions]
    clips = torch.stack([item["video"][0] for item in items])
    clip_masks = []
    for item in items:
        frames = masks[relative_path(dataset, int(item["index"]))]
        indices = sampler(len(frames))[0]
        if still_frame:
            indices = indices[:1].repeat(len(indices))
        clip_masks.append(torch.from_numpy(frames[indices]))
    return (still(clips) if still_frame else clips), torch.stack(clip_masks)


def foreground_ratios(amaps: torch.Tensor, clip_masks: torch.Tensor) -> np.ndarray:
    """Per clip, (sum_p A(p) m(p) / sum_p A(p)) / mean_p m(p): 1 = no preference for the object,
    above 1 = more activation on it than its share of the frame.

    amaps: (N, T', h, w) >= 0, activation maps of clips seen whole (crop_fraction=1), so maps and
    masks are aligned; clip_masks: bool (N, T, H, W), the object in the clips' frames; m(p) is the
    share of map cell p the object covers (the mask average-pooled to the map's grid). NaN for a
    clip whose frames hold no object or whose map is silent: there is no preference to measure.
    """
    ratios = np.full(len(amaps), np.nan)
    for row, (amap, mask) in enumerate(zip(amaps, clip_masks)):
        coverage = F.adaptive_avg_pool3d(mask.float()[None, None].to(amap.device), amap.shape)[0, 0]
        share = coverage.mean()
        if share > 0 and amap.sum() > 0:
            ratios[row] = ((amap * coverage).sum() / amap.sum() / share).item()
    return ratios


@torch.no_grad()
def foreground_ratio(backbone, dataset, masks: Masks, transform, device, sampler: UniformClipSampler,
                     batch_size: int = 32, still_frame: bool = False) -> float:
    """Mean over videos of `foreground_ratios`: where the last stage looks, on each video's clip.

    The transform must keep the whole frame (crop_fraction=1) so masks and maps are aligned.
    `still_frame`: the transform shows the clip's first frame repeated (the static control), so the
    mask is that frame's, repeated. Videos without a ratio (NaN) are left out of the mean.
    """
    was_training = backbone.training
    backbone.eval()
    ratios = []
    last = backbone.stage_names[-1]
    for start in range(0, len(dataset), batch_size):
        clips, clip_masks = clips_and_masks(dataset, range(start, min(start + batch_size, len(dataset))), masks,
                                            sampler, still_frame)
        amaps = activation_map(backbone.features(transform(clips.to(device)), stages=(last,))[last]).float()
        ratios += [r for r in foreground_ratios(amaps, clip_masks) if not np.isnan(r)]
    backbone.train(was_training)
    return float(np.mean(ratios)) if ratios else float("nan")


def toy_probes(cfg, backbone, transform, device, num_clips: int = 4) -> dict[str, float]:
    """Every toy-world probe of one backbone, as a flat dict of numbers (all levels in one pass)."""
    world = Path(cfg.data.root)
    train_set, test_set = eval_datasets(cfg, num_clips=num_clips)
    stages = probe_stages(backbone)
    train = extract_features(backbone, train_set, transform, device, stages=stages)
    test = extract_features(backbone, test_set, transform, device, stages=stages)
    manifest = {row["path"]: row for row in load_manifest(world)}
    rows = [manifest[relative_path(test_set, int(i))] for i in test["index"]]
    factors = {"action": test["labels"], "object": torch.tensor([r["object_id"] for r in rows]),
               "scene": torch.tensor([r["scene_id"] for r in rows])}
    results = factor_probes(train["features"], train["labels"], test["features"], factors)
    last = stages[-1]
    results.update(retrieval_recall(train["features"][last], train["labels"], test["features"][last],
                                    test["labels"], ks=(1, 5, 10)))
    full_frame = lambda clips: transform(clips, crop_fraction=1.0)  # noqa: E731 - keeps masks aligned
    sampler = UniformClipSampler(cfg.model.clip_frames, cfg.model.clip_stride, 1)
    test_set.clip_sampler = sampler
    results["fg_ratio"] = foreground_ratio(backbone, test_set, Masks(world), full_frame, device, sampler,
                                           still_frame=getattr(cfg.model, "static_frame", False))
    return results


@torch.no_grad()
def own_classifier_predictions(model, cfg, device, num_clips: int = 4, batch_size: int = 32) -> dict:
    """A supervised model's own classifier (the head trained with the backbone, on the scene-biased
    train split) on every test video: logits averaged over the video's num_clips uniform clips,
    each seen through the model's test-time view (one frame repeated for the static control).
    Returns the test set and, in dataset order, logits (n, C), labels and scene ids."""
    _, test_set = eval_datasets(cfg, num_clips=num_clips)
    transform = eval_transform(model)
    manifest = {row["path"]: row for row in load_manifest(Path(cfg.data.root))}
    logits, labels, scenes = [], [], []
    for batch in DataLoader(test_set, batch_size=batch_size):
        b, k = batch["video"].shape[:2]
        clips = transform(batch["video"].flatten(0, 1).to(device))
        logits.append(model.classifier(model.backbone(clips)).float().view(b, k, -1).mean(1).cpu())
        labels.append(batch["label"])
        scenes += [manifest[relative_path(test_set, int(i))]["scene_id"] for i in batch["index"]]
    return {"test_set": test_set, "logits": torch.cat(logits), "labels": torch.cat(labels),
            "scenes": torch.tensor(scenes)}


def scene_following_errors(labels: torch.Tensor, predicted: torch.Tensor, scenes: torch.Tensor) -> dict:
    """How a classifier's test-split errors relate to the scene. Scene i is action i's home scene
    (`toyworld`), and test scenes are drawn independently of the action, so an error that ignored
    the scene would fall in the predicted class's home scene with probability 1/8; a classifier
    that learned "scene i means action i" makes nearly all of its errors there."""
    wrong = predicted != labels
    follows_scene = wrong & (scenes == predicted % len(SCENES))
    at_home = scenes == labels % len(SCENES)   # the video happens to sit in its own action's home scene
    return {
        "accuracy": (~wrong).double().mean().item(),
        "errors": int(wrong.sum()),
        "errors in the predicted class's home scene": int(follows_scene.sum()),
        "share of errors (chance 0.125)": follows_scene.sum().item() / max(1, int(wrong.sum())),
        "accuracy, video in its own home scene": (~wrong[at_home]).double().mean().item(),
        "accuracy, video in another scene": (~wrong[~at_home]).double().mean().item(),
        "videos in their own home scene": int(at_home.sum()),
    }
