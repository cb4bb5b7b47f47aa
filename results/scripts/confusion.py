"""Which actions a trained run misses: confusion matrices on the world's scene-unbiased test split.

Exploration tool behind results/toyworld_log.md (not part of the library). For the run folder
given (config.yaml + final.pt, e.g. runs/reproduce/full/supervised/seed0):
- the library's action_unbiased probe (hdc_lib.evaluate.fit_probes on the last stage, cross-fitted
  on class-stratified halves, as hdc_lib.probes does), its confusion matrix, and the same probe
  cross-fitted on 5 and 10 folds (is the 2-fold number limited by its fit-set size?);
- for a supervised run, the network's own classifier (trained on the scene-biased train split):
  its confusion matrix, and how many of its errors fall in the predicted class's home scene.

    python results/scripts/confusion.py runs/reproduce/full/supervised/seed0
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from hdc_lib.checkpoint import load_checkpoint
from hdc_lib.data.toyworld import ACTIONS, load_manifest
from hdc_lib.evaluate import fit_probes, stratified_folds
from hdc_lib.experiment import load_config
from hdc_lib.features import eval_datasets, eval_transform, extract_features
from hdc_lib.probes import probe_stages, relative_path
from hdc_lib.reproduce import load_model


def cross_fitted_predictions(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Each item's prediction by the probe fitted on the other k-1 folds."""
    folds = stratified_folds(y, k)
    predictions = fit_probes([x], y, torch.stack([folds != f for f in range(k)])).predictions[:, 0]
    return predictions.gather(0, folds[None]).squeeze(0)


def confusion(y: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    return torch.bincount(y * len(ACTIONS) + predicted, minlength=len(ACTIONS) ** 2).view(len(ACTIONS), -1)


def main(run: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_config(run / "config.yaml")
    model = load_model(cfg, load_checkpoint(run / "final.pt")["model"], len(ACTIONS), "cpu")
    _, test_set = eval_datasets(cfg, num_clips=4)
    transform = eval_transform(model)
    stages = probe_stages(model.backbone)
    test = extract_features(model.backbone, test_set, transform, "cpu", stages=stages)
    y, x = test["labels"], test["features"][stages[-1]]
    print(f"{run}: {len(y)} test videos, rows = true action, columns = predicted, order {ACTIONS}")
    predictions = {k: cross_fitted_predictions(x, y, k) for k in (2, 5, 10)}
    for k, predicted in predictions.items():
        print(f"action_unbiased probe, {k}-fold cross-fitted: {(predicted == y).double().mean():.3f}")
    print("confusion of the 2-fold probe (the library's):")
    print(confusion(y, predictions[2]))
    if not hasattr(model, "classifier"):
        return
    manifest = {row["path"]: row for row in load_manifest(Path(cfg.data.root))}
    home = {row["label"]: row["scene_id"] for row in manifest.values() if row["home_scene"]}  # class -> its home scene
    labels, predicted, in_home = [], [], []
    with torch.no_grad():
        for i in range(len(test_set)):
            item = test_set[i]
            p = int(model.classifier(model.backbone(transform(item["video"]))).mean(0).argmax())
            labels.append(int(item["label"]))
            predicted.append(p)
            in_home.append(manifest[relative_path(test_set, int(item["index"]))]["scene_id"] == home[p])
    labels, predicted, in_home = torch.tensor(labels), torch.tensor(predicted), torch.tensor(in_home)
    wrong = predicted != labels
    print(f"the network's own classifier: accuracy {1 - wrong.double().mean():.3f}")
    print(confusion(labels, predicted))
    print(f"its errors: {int(wrong.sum())}, in the predicted class's home scene: {int((wrong & in_home).sum())} "
          f"(chance: 1 in {len({row['scene_id'] for row in manifest.values()})} scenes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
