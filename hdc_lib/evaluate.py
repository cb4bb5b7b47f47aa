"""Evaluation protocols (method-spec.md, "Evaluation protocols").

Everything starts from frozen backbone features of whole videos: N uniformly spaced clips, centre
crop, no random augmentation, the last stage's global average pool (optionally every stage),
averaged over the clips. On top of them:

- kNN (the pretraining monitor): k = 20 neighbours by cosine similarity, votes weighted by
  exp(sim / 0.07).
- Linear probe: multinomial logistic regression. A linear classifier's mean of logits over clips
  equals its logits of the mean feature, so averaging features first is the spec's video-level
  protocol exactly.
- Retrieval: test videos query the train videos; features mean-centred (train mean), L2-normalised;
  R@k = share of queries with a same-class video among their k nearest.
- Fine-tuning lives in `finetune.py`; the toy world's factor probes in `probes.py`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hdc_lib.augment import SpatialAugment
from hdc_lib.backbones import build_backbone
from hdc_lib.checkpoint import backbone_state, load_checkpoint
from hdc_lib.data.samplers import UniformClipSampler
from hdc_lib.experiment import build_dataset, load_config


def eval_transform(method):
    """The deterministic test-time view: the method's augmentation's centre crop."""
    return method.augment.center


@torch.no_grad()
def extract_features(backbone, dataset, transform, device, batch_size: int = 32,
                     stages: tuple[str, ...] | None = None, workers: int = 0) -> dict:
    """Video-level features: each stage's GAP averaged over the item's clips.

    Returns {"features": {stage: (N, C)}, "labels": (N,), "index": (N,)}, in dataset order.
    """
    was_training = backbone.training
    backbone.eval()
    stages = stages or (backbone.stage_names[-1],)
    feats = {s: [] for s in stages}
    labels, indices = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        video = batch["video"].to(device)                     # (B, K, T, H, W, C)
        b, k = video.shape[:2]
        clips = transform(video.flatten(0, 1))                # (B*K, C, T, h, w)
        maps = backbone.features(clips, stages=stages)
        for s in stages:
            feats[s].append(maps[s].mean(dim=(2, 3, 4)).view(b, k, -1).mean(1).float().cpu())
        labels.append(batch["label"])
        indices.append(batch["index"])
    backbone.train(was_training)
    return {"features": {s: torch.cat(v) for s, v in feats.items()},
            "labels": torch.cat(labels), "index": torch.cat(indices)}


def cached_features(cache_dir: Path | None, key: dict, compute) -> dict:
    """`compute()` once per key (a checkpoint's identity plus the extraction settings)."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"features_{digest}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(result, tmp)
    tmp.replace(path)
    return result


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Weighted kNN: score(c) = sum over the k nearest bank items of class c of exp(sim / t)."""
    sims = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).t()
    top, idx = sims.topk(min(k, bank.shape[0]), dim=1)
    votes = torch.zeros(queries.shape[0], num_classes, dtype=sims.dtype)
    votes.scatter_add_(1, bank_labels[idx], torch.exp(top / temperature))
    return votes.argmax(dim=1)


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


def eval_datasets(cfg, num_clips: int, limit: int | None = None):
    """Train (bank / gallery) and test (queries) splits with N uniform clips per video."""
    sampler = UniformClipSampler(cfg.model.clip_frames, cfg.model.clip_stride, num_clips)
    splits = [build_dataset(cfg, train=t, clip_sampler=sampler) for t in (True, False)]
    if limit is not None:
        splits = [_evenly_spaced_subset(ds, limit) for ds in splits]
    return splits


def _evenly_spaced_subset(dataset, limit: int):
    """At most `limit` videos spread over the whole (class-sorted) list, deterministically."""
    if len(dataset) <= limit:
        return dataset
    keep = torch.linspace(0, len(dataset) - 1, limit).round().long().unique().tolist()
    subset = torch.utils.data.Subset(dataset, keep)
    subset.classes = dataset.classes
    return subset


def knn_monitor(cfg, method, ctx) -> float | None:
    """kNN action accuracy of the online backbone on held-out videos (rank 0; others wait)."""
    accuracy = None
    if ctx.is_main:
        bank, queries = eval_datasets(cfg, num_clips=1, limit=cfg.train.knn_videos)
        transform = eval_transform(method)
        backbone = method.backbone
        train = extract_features(backbone, bank, transform, ctx.device)
        test = extract_features(backbone, queries, transform, ctx.device)
        stage = backbone.stage_names[-1]
        predicted = knn_predict(train["features"][stage], train["labels"], test["features"][stage],
                                num_classes=len(bank.classes))
        accuracy = (predicted == test["labels"]).float().mean().item()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return accuracy


# -- `hdc eval`: the protocols on a finished run ---------------------------------------------
PROTOCOLS = ("linear", "retrieval", "finetune", "probes")


def load_backbone(run_dir: Path, checkpoint: str | None, overrides: list[str], device):
    """The run's config (with overrides, e.g. another dataset) and its trained backbone."""

    cfg = load_config(run_dir / "config.yaml", overrides)
    path = Path(checkpoint) if checkpoint else run_dir / "final.pt"
    backbone = build_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    backbone.load_state_dict(backbone_state(load_checkpoint(path)["model"]))
    stat = path.stat()
    identity = {"checkpoint": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
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
    from hdc_lib.train import train  # train imports this module

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


def add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a pretrained run: linear probe, retrieval, fine-tuning, toy probes",
        description="Evaluate a run folder (its config.yaml and final.pt). Dotted overrides switch "
                    "the dataset, e.g. data.dataset=hmdb51 data.root=... data.split_dir=...")
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("--run", required=True, help="the run folder (train.out_dir)")
    parser.add_argument("--checkpoint", help="another checkpoint than <run>/final.pt")
    parser.add_argument("--clips", type=int, default=10, help="uniform clips per test video")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from hdc_lib.probes import toy_probes  # probes imports this module
    from hdc_lib.train import setup

    device = setup().device
    run_dir = Path(args.run)
    cfg, backbone, transform, identity = load_backbone(run_dir, args.checkpoint, args.overrides, device)
    if args.protocol == "finetune":
        result = finetune(cfg, run_dir, args.checkpoint, args.epochs, args.lr, args.clips, device,
                          not args.no_progress)
    elif args.protocol == "probes":
        result = toy_probes(cfg, backbone, transform, device, args.clips)
    else:
        train, test = video_features(cfg, backbone, transform, device, identity, args.clips,
                                     run_dir / "features")
        stage = backbone.stage_names[-1]
        x_train, x_test = train["features"][stage], test["features"][stage]
        result = ({"accuracy": linear_probe(x_train, train["labels"], x_test, test["labels"])}
                  if args.protocol == "linear" else
                  retrieval_recall(x_train, train["labels"], x_test, test["labels"]))
    result = {"protocol": args.protocol, "dataset": cfg.data.dataset, "clips": args.clips, **result}
    (run_dir / f"eval_{args.protocol}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0
