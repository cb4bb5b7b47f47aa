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
from hdc_lib.data.toyworld import ACTIONS, SCENES
from hdc_lib.evaluate import confusion_matrix
from hdc_lib.experiment import load_config
from hdc_lib.features import eval_datasets, eval_transform, extract_features
from hdc_lib.probes import (cross_fitted_predictions, own_classifier_predictions, probe_stages,
                            scene_following_errors)
from hdc_lib.reproduce import load_model


def main(run: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_config(run / "config.yaml")
    model = load_model(cfg, load_checkpoint(run / "final.pt")["model"], len(ACTIONS), "cpu")
    _, test_set = eval_datasets(cfg, num_clips=4)
    stages = probe_stages(model.backbone)
    test = extract_features(model.backbone, test_set, eval_transform(model), "cpu", stages=stages)
    y, x = test["labels"], test["features"][stages[-1]]
    print(f"{run}: {len(y)} test videos, rows = true action, columns = predicted, order {ACTIONS}")
    predictions = {k: cross_fitted_predictions([x], y, folds=k)[0] for k in (2, 5, 10)}
    for k, predicted in predictions.items():
        print(f"action_unbiased probe, {k}-fold cross-fitted: {(predicted == y).double().mean():.3f}")
    print("confusion of the 2-fold probe (the library's):")
    print(confusion_matrix(y, predictions[2], len(ACTIONS)))
    if not hasattr(model, "classifier"):
        return
    own = own_classifier_predictions(model, cfg, "cpu", num_clips=4)
    predicted = own["logits"].argmax(1)
    errors = scene_following_errors(own["labels"], predicted, own["scenes"])
    print(f"the network's own classifier: accuracy {errors['accuracy']:.3f}")
    print(confusion_matrix(own["labels"], predicted, len(ACTIONS)))
    following = errors["errors in the predicted class's home scene"]
    print(f"its errors: {errors['errors']}, in the predicted class's home scene: {following} "
          f"(chance: 1 in {len(SCENES)} scenes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
