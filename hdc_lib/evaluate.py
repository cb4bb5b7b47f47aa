"""Evaluation protocols (docs/methods.md, "Evaluation protocols") on frozen video features.

The features (N uniform clips per video, centre crop, each stage's GAP averaged over the clips)
and the kNN monitor come from `features.py`; on top of them:

- Linear probe: multinomial logistic regression. A linear classifier's mean of logits over clips
  equals its logits of the mean feature, so averaging features first is the video-level
  protocol exactly.
- Retrieval: test videos query the train videos; features mean-centred (train mean), L2-normalised;
  R@k = share of queries with a same-class video among their k nearest.
- Fine-tuning: the supervised method started from the pretrained backbone (`finetune`).

The toy world's factor probes are in `probes.py`; `hdc eval` (cli.py) runs any of them on a run.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hdc_lib.augment import SpatialAugment
from hdc_lib.backbones import build_backbone, use_precision
from hdc_lib.checkpoint import backbone_state, load_checkpoint
from hdc_lib.experiment import load_config
from hdc_lib.features import cached_features, eval_datasets, extract_features
from hdc_lib.precision import resolve_precision
from hdc_lib.train import train


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, weight_decay: float = 1e-4, max_iter: int = 200) -> float:
    """Accuracy of a multinomial logistic regression fitted by L-BFGS on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    x, xt = ((train_x - mean) / std).double(), ((test_x - mean) / std).double()
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        # L = CE(xW + b, y) + lambda/2 ||W||^2
        loss = F.cross_entropy(x @ weight + bias, train_y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.no_grad():
        return ((xt @ weight + bias).argmax(1) == test_y).double().mean().item()


def retrieval_recall(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, ks=(1, 5, 10, 20, 50)) -> dict[str, float]:
    """R@k: a query is a hit if any of its k nearest train videos shares its class."""
    mean = train_x.mean(0)
    gallery = F.normalize(train_x - mean, dim=1)
    queries = F.normalize(test_x - mean, dim=1)
    order = (queries @ gallery.t()).argsort(dim=1, descending=True)
    same = train_y[order] == test_y[:, None]
    return {f"R@{k}": same[:, :k].any(dim=1).double().mean().item() for k in ks if k <= len(train_y)}


# -- A finished run: its backbone, its cached features, fine-tuning --------------------------
def load_backbone(run_dir: Path, checkpoint: str | None, overrides: list[str], device):
    """The run's config (with overrides, e.g. another dataset) and its trained backbone, computing
    in the run's train.precision (so features are extracted as fast as the device allows)."""

    cfg = load_config(run_dir / "config.yaml", overrides)
    path = Path(checkpoint) if checkpoint else run_dir / "final.pt"
    backbone = build_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    backbone.load_state_dict(backbone_state(load_checkpoint(path)["model"]))
    precision = resolve_precision(cfg.train.precision, device)
    use_precision(backbone, precision)
    stat = path.stat()
    identity = {"checkpoint": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                "precision": precision}
    return cfg, backbone.to(device), SpatialAugment(cfg.model.augment).center, identity


def video_features(cfg, backbone, transform, device, identity: dict, num_clips: int, cache_dir) -> tuple:
    """Train and test features of N uniform clips per video, cached per checkpoint and settings."""
    splits = []  # built on the first cache miss only, once for both splits

    def compute(train: bool):
        if not splits:
            splits.extend(eval_datasets(cfg, num_clips))
        return extract_features(backbone, splits[0 if train else 1], transform, device,
                                workers=cfg.data.workers)

    key = {**identity, "data": cfg.to_dict()["data"], "clips": num_clips,
           "frames": cfg.model.clip_frames, "stride": cfg.model.clip_stride}
    return tuple(cached_features(cache_dir, {**key, "train": t}, lambda t=t: compute(t)) for t in (True, False))


def finetune(cfg, run_dir: Path, checkpoint: str | None, epochs: int, lr: float, num_clips: int,
             device, progress: bool) -> dict:
    """Fine-tune the whole backbone plus a new linear layer on the labels (the supervised method
    started from the pretrained backbone), then test video-level: logits averaged over N clips."""
    out = run_dir / "finetune"
    ft_cfg = load_config(None, [
        "method=supervised", f"data={json.dumps(cfg.to_dict()['data'])}",
        f"model.backbone={cfg.model.backbone}", f"model.clip_frames={cfg.model.clip_frames}",
        f"model.clip_stride={cfg.model.clip_stride}",
        f"model.augment={json.dumps(cfg.to_dict()['model']['augment'])}",
        f"optim.lr={lr}", f"train.epochs={epochs}", f"train.batch_size={cfg.train.batch_size}",
        f"train.seed={cfg.train.seed}", f"train.out_dir={out}", "train.knn_every=0",
        f"train.init_backbone={checkpoint or run_dir / 'final.pt'}"])
    model = train(ft_cfg, progress=progress)["method"]
    model.eval()
    test_set = eval_datasets(ft_cfg, num_clips)[1]
    correct = 0
    with torch.no_grad():
        for batch in DataLoader(test_set, batch_size=16, num_workers=cfg.data.workers):
            video = batch["video"].to(device)
            b, k = video.shape[:2]
            logits = model.classifier(model.backbone(model.augment.center(video.flatten(0, 1))))
            correct += (logits.view(b, k, -1).mean(1).argmax(1).cpu() == batch["label"]).sum().item()
    return {"accuracy": correct / len(test_set), "epochs": epochs, "lr": lr}
