"""Evaluation protocols (docs/methods.md, "Evaluation protocols") on frozen video features.

The features (N uniform clips per video, centre crop, each stage's GAP averaged over the clips)
and the kNN monitor come from `features.py`; on top of them:

- Linear probe: multinomial logistic regression on features standardised with the fit set's
  statistics, its L2 strength chosen by stratified 5-fold cross-validation inside the fit set and
  then refitted on all of it; nothing it is scored on is seen. A linear classifier's mean of logits
  over clips equals its logits of the mean feature, so averaging features first is the video-level
  protocol exactly. Every fold, strength and feature level is one row of a batched L-BFGS
  (`fit_logistic`). It is kept for its protocol, not its speed: on the same toy-world features
  scikit-learn's LogisticRegressionCV is faster on one CPU thread (6.3 s against 20.5 s for the
  action_biased and scene probes of two backbones at three levels, results/probe_solver.md) with
  the same accuracy to within 0.02, but it standardises once per fit set where this standardises
  each fold on its own training part and scales lambda with the fold's size, chose another
  strength in 5 of 12 scene fits and another class in up to 1% of the predictions: swapping it
  in would change the committed probe numbers.
- Retrieval: test videos query the train videos; features mean-centred (train mean), L2-normalised;
  R@k = share of queries with a same-class video among their k nearest.
- Fine-tuning: the supervised method started from the pretrained backbone (`finetune`).

The toy world's factor probes are in `probes.py`; `hdc eval` (cli.py) runs any of them on a run.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader

from hdc_lib.augment import SpatialAugment
from hdc_lib.backbones import build_backbone, use_precision
from hdc_lib.checkpoint import backbone_state, load_checkpoint
from hdc_lib.config import ConfigError
from hdc_lib.experiment import load_config, read_yaml
from hdc_lib.features import cached_features, eval_datasets, extract_features
from hdc_lib.precision import resolve_precision
from hdc_lib.runtime import progress_bar
from hdc_lib.train import train

log = logging.getLogger(__name__)


# -- Linear probes: L2-regularised multinomial logistic regression, strength chosen by CV ----------
# lambda of L = CE + lambda/2 ||W||^2 on standardised features, one per decade: from 1e-4 (weaker
# than scikit-learn's default C = 1, i.e. lambda = 1/n, for every fit set here) to 10, where only
# the class priors are left.
L2_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
CV_FOLDS = 5


def stratified_folds(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Fold 0..k-1 of every item: items in class order (dataset order within a class) dealt round
    robin, the count running on across classes. Each class spreads over the folds as evenly as its
    size allows, fold sizes differ by at most one, and the same labels always give the same folds."""
    folds = torch.empty_like(labels)
    folds[torch.sort(labels, stable=True).indices] = torch.arange(len(labels)) % k
    return folds


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row inner product of two (R, D+1, C) tensors."""
    return (a * b).sum((1, 2))


def lbfgs_direction(grad, steps, changes, inverse_curvature, scale) -> torch.Tensor:
    """direction = -H grad by the two-loop recursion, H the L-BFGS inverse Hessian of each row
    (from its last (s, y, 1/s.y) and initial scale s.y / y.y); steepest descent for a row where
    -H grad would not descend."""
    q, alphas = grad.clone(), []
    for s, g, rho in zip(reversed(steps), reversed(changes), reversed(inverse_curvature)):
        alphas.append(rho * _dot(s, q))
        q -= alphas[-1][:, None, None] * g
    q *= scale[:, None, None]
    for s, g, rho, alpha in zip(steps, changes, inverse_curvature, reversed(alphas)):
        q += (alpha - rho * _dot(g, q))[:, None, None] * s
    return torch.where((_dot(grad, q) <= 0)[:, None, None], grad, q).neg()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, present: torch.Tensor,
                 strength: float, init: torch.Tensor | None = None, tolerance: float = 1e-4,
                 max_iter: int = 1000, history: int = 10) -> torch.Tensor:
    """Independent L2-regularised multinomial logistic regressions, one per row r, by batched L-BFGS.

    Row r minimises L_r(theta) = sum_i w_ri CE(x_ri theta, y_ri) / sum_i w_ri + lambda/2 ||theta[1:]||^2
    over theta (D+1, C); x_ri[0] = 1, so theta[0] is the (unpenalised) bias. x: (R, n, D+1),
    y: (R, n), weight: (R, n) >= 0 (0 = not in this fit), present: (R, C) bool, the classes the row
    has examples of (the others get logit -inf: a class absent from a fit cannot be predicted).
    Every row has its own step sizes (Armijo backtracking), and stops once max |dL_r/dtheta| <=
    tolerance (scikit-learn's default rule), so it ends where it would have ended alone.
    `init` warm-starts (a neighbouring strength's solution). Returns theta (R, D+1, C).
    """
    rows, _, width = x.shape
    share = weight / weight.sum(1, keepdim=True)
    unused = share == 0
    onehot = F.one_hot(y, present.shape[1]).to(x.dtype)
    absent = torch.zeros(present.shape, dtype=x.dtype, device=x.device).masked_fill(~present, -torch.inf)[:, None]
    penalised = torch.ones(width, 1, dtype=x.dtype, device=x.device)
    penalised[0] = 0.0

    def objective(theta, r=slice(None)):  # loss and gradient of rows r at their theta
        logits = x[r] @ theta + absent[r]
        log_p = logits - logits.logsumexp(2, keepdim=True)  # 4x faster than log_softmax at C ~ 8
        # -log p(y_i); items outside the fit may be of an absent class (-inf): they weigh 0
        nll = (-log_p.gather(2, y[r, :, None])[..., 0]).masked_fill(unused[r], 0.0)
        loss = (share[r] * nll).sum(1) + 0.5 * strength * _dot(penalised * theta, theta)
        # dL/dtheta = sum_i w_i x_i (p_i - onehot_i) / sum w + lambda theta (bias row unpenalised)
        grad = x[r].mT @ ((log_p.exp() - onehot[r]) * share[r, :, None]) + strength * penalised * theta
        return loss, grad

    theta = (torch.zeros(rows, width, present.shape[1], dtype=x.dtype, device=x.device) if init is None
             else init.clone())
    loss, grad = objective(theta)
    steps, changes, inverse_curvature = [], [], []  # the last `history` (s, y, 1/s.y) of every row
    scale = torch.ones(rows, dtype=x.dtype, device=x.device)  # s.y / y.y: initial inverse Hessian
    done = torch.zeros(rows, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        done |= grad.abs().amax((1, 2)) <= tolerance
        if done.all():
            break
        direction = lbfgs_direction(grad, steps, changes, inverse_curvature, scale)
        direction[done] = 0.0
        slope = _dot(grad, direction)
        # Armijo backtracking per row, re-evaluating only the rows that must step back; the very
        # first step is scaled down like torch's L-BFGS.
        t = torch.ones_like(scale) if steps else (1 / grad.abs().sum((1, 2))).clamp(max=1)
        new_loss, new_grad = objective(theta + t[:, None, None] * direction)
        for _ in range(40):
            retry = torch.nonzero((new_loss > loss + 1e-4 * t * slope) & ~done).flatten()
            if len(retry) == 0:
                break
            t[retry] /= 2
            new_loss[retry], new_grad[retry] = objective(
                theta[retry] + t[retry, None, None] * direction[retry], retry)
        accepted = (new_loss <= loss + 1e-4 * t * slope) | done
        # A row whose loss no longer falls is as converged as float64 allows (below |grad| ~ 1e-8
        # the decrease a step can make is under the loss's rounding): stop it where it is.
        stalled = ~accepted | (new_loss >= loss)
        done |= stalled
        t[stalled] = 0.0
        new_loss = torch.where(stalled, loss, new_loss)
        new_grad = torch.where(stalled[:, None, None], grad, new_grad)
        s, g = t[:, None, None] * direction, new_grad - grad
        sy = _dot(s, g)
        curved = sy > 1e-12  # a pair without positive curvature would break H; it then adds nothing
        inverse_curvature.append(torch.where(curved, 1 / sy.clamp_min(1e-300), 0.0))
        steps.append(s)
        changes.append(g)
        scale = torch.where(curved, sy / _dot(g, g).clamp_min(1e-300), scale)
        if len(steps) > history:
            del steps[0], changes[0], inverse_curvature[0]
        theta, loss, grad = theta + s, new_loss, new_grad
    return theta


@contextmanager
def one_thread():
    """Run the probe solver (as a decorator, or `with`) on one CPU thread. Its tensors are small
    (rows x n x D, about 1e5-1e6 numbers), so OpenMP fan-out gains little, and on a busy 2-core
    machine every parallel region waits for a descheduled thread: one half-split probe took
    1.8-2.0 s on one thread and 13-37 s on two with other jobs running."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class ProbeFit:
    predictions: torch.Tensor  # (S, L, n): class of every item by fit set s's probe at level l
    strength: torch.Tensor     # (S, L): the lambda cross-validation chose inside fit set s
    cv_accuracy: torch.Tensor  # (S, L, G): held-out accuracy of each L2_STRENGTHS inside fit set s


@one_thread()
def fit_probes(features, labels: torch.Tensor, fit: torch.Tensor, strengths=L2_STRENGTHS,
               folds: int = CV_FOLDS, tolerance: float = 1e-4) -> ProbeFit:
    """Linear probes of several feature levels, each fitted on several fit sets at once.

    features: L tensors (n, D_l), the same n items at each level; labels: (n,); fit: (S, n) bool.
    For every fit set and level: stratified k-fold cross-validation inside the fit set (k =
    min(folds, its size)) scores every strength by pooled held-out accuracy; the best wins (ties:
    the stronger), and is refitted on the whole fit set. Every fit standardises with its own
    training items' mean and std. Items outside the fit set are predicted, never read by a fit.
    The solver runs on the CPU (features from any device): its tensors are small.
    """
    levels = [f.detach().double().cpu() for f in features]
    labels, fit = labels.cpu(), fit.cpu()
    width = max(f.shape[1] for f in levels)
    num_classes = int(labels.max()) + 1
    members = [torch.nonzero(row).flatten() for row in fit]
    size = max(len(m) for m in members)
    # One task per (fit set, training part): the k CV training parts, then the whole fit set (last).
    tasks = []  # (fit set, items' positions in the fit set it trains on, held-out positions)
    for s, items in enumerate(members):
        k = min(folds, len(items))
        if k > 1:  # (one item holds nothing out: every strength ties, and the tie rule decides)
            inner = stratified_folds(labels[items], k)
            tasks += [(s, inner != j, inner == j) for j in range(k)]
        tasks.append((s, torch.ones(len(items), dtype=torch.bool), None))
    # Fit sets padded to a common size with weight-0 items, then every task standardised apart.
    y = torch.zeros(len(tasks), size, dtype=torch.long)
    weight = torch.zeros(len(tasks), size, dtype=torch.float64)
    x = torch.zeros(len(levels), len(tasks), size, width + 1, dtype=torch.float64)
    stats = []  # each task's (mean, std) per level, to standardise the items a refit predicts
    for t, (s, train, _) in enumerate(tasks):
        items = members[s]
        y[t, :len(items)], weight[t, :len(items)] = labels[items], train.double()
        stats.append([])
        for l, f in enumerate(levels):
            mean, std = f[items[train]].mean(0), f[items[train]].std(0, unbiased=False).clamp_min(1e-6)
            stats[-1].append((mean, std))
            x[l, t, :len(items), 0] = 1.0
            x[l, t, :len(items), 1:f.shape[1] + 1] = (f[items] - mean) / std
    present = torch.zeros(len(tasks), num_classes, dtype=torch.bool)
    for t in range(len(tasks)):
        present[t, y[t][weight[t] > 0]] = True
    per_level = len(levels), 1  # rows are (level, task), level-major, like x.flatten(0, 1)
    thetas, theta = {}, None
    for strength in sorted(strengths, reverse=True):  # the path from strong to weak, warm-started
        theta = fit_logistic(x.flatten(0, 1), y.repeat(per_level), weight.repeat(per_level),
                             present.repeat(per_level), strength, theta, tolerance)
        thetas[strength] = theta.view(len(levels), len(tasks), width + 1, num_classes)

    absent = torch.zeros(present.shape, dtype=torch.float64).masked_fill(~present, -torch.inf)
    grid = torch.tensor(strengths, dtype=torch.float64)
    cv_correct = torch.zeros(len(members), len(levels), len(strengths), dtype=torch.float64)
    for t, (s, _, held_out) in enumerate(tasks):
        if held_out is None:
            continue
        for g, strength in enumerate(strengths):
            logits = x[:, t, :len(members[s])][:, held_out] @ thetas[strength][:, t] + absent[t]
            cv_correct[s, :, g] += (logits.argmax(2) == labels[members[s]][held_out]).sum(1)
    cv_accuracy = cv_correct / torch.tensor([len(m) for m in members])[:, None, None]
    # The best held-out accuracy wins; among ties the strongest lambda (the simplest probe).
    strongest_first = grid.argsort(descending=True)
    ranked = cv_accuracy[..., strongest_first]
    chosen = strongest_first[(ranked == ranked.max(2, keepdim=True).values).int().argmax(2)]  # (S, L)
    refit = [t for t, (_, _, held_out) in enumerate(tasks) if held_out is None]
    predictions = torch.empty(len(members), len(levels), len(labels), dtype=torch.long)
    for s, t in enumerate(refit):
        for l, f in enumerate(levels):
            mean, std = stats[t][l]
            theta = thetas[strengths[chosen[s, l]]][l, t]
            z = torch.cat([torch.ones(len(f), 1, dtype=f.dtype), (f - mean) / std], 1)
            predictions[s, l] = (z @ theta[:f.shape[1] + 1] + absent[t]).argmax(1)
    return ProbeFit(predictions, grid[chosen], cv_accuracy)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[i, j]: how many items of class i were predicted as class j."""
    pairs = labels.long() * num_classes + predicted.long()
    return torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, num_classes)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor) -> float:
    """Test accuracy of the multinomial logistic regression fitted on train (L2 strength chosen by
    cross-validation inside train, standardised with train's statistics)."""
    n = len(train_y)
    fit = torch.zeros(1, n + len(test_y), dtype=torch.bool)
    fit[0, :n] = True
    # the test labels only size the class count; no fit reads them
    result = fit_probes([torch.cat([train_x, test_x])], torch.cat([train_y, test_y]), fit)
    return (result.predictions[0, 0, n:] == test_y).double().mean().item()


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
# What `hdc eval` overrides may set. Every protocol reads a dataset (data.*) with the run's
# backbone in train.precision; fine-tuning also trains, so the fine-tuning run's optim.*, train.*
# and model.* keys are its own, except what must be the pretrained run's.
FEATURE_OVERRIDES = ("data.", "train.precision")
PRETRAINED_ONLY = ("method", "model.backbone", "model.backbone_kwargs", "train.init_backbone")


def split_overrides(protocol: str, overrides: list[str]) -> tuple[list[str], list[str]]:
    """`hdc eval` overrides as (those of the evaluated run's config, those of the fine-tuning run).
    An override that `protocol` would not read is a ConfigError naming it."""
    for_run, for_finetuning = [], []
    for item in overrides:
        key = item.partition("=")[0]
        if key.startswith(FEATURE_OVERRIDES):
            for_run.append(item)
        elif protocol != "finetune":
            raise ConfigError(f"override {item!r} is not read by `hdc eval {protocol}`, which takes data.* "
                              "and train.precision (optim.*, train.* and model.* configure `hdc eval finetune`)",
                              key=key)
        elif key.startswith(PRETRAINED_ONLY):
            raise ConfigError(f"override {item!r}: fine-tuning starts from the pretrained run's backbone "
                              f"({', '.join(PRETRAINED_ONLY)} are the run's)", key=key)
        else:
            for_finetuning.append(item)
    return for_run, for_finetuning


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


def result_name(run_dir: Path, cfg, checkpoint: str | None) -> str:
    """What an evaluation's results are named after: "" for the run's own final.pt on its own
    dataset; else "_<dataset>[-split<fold>]" when the dataset is another, and "_<checkpoint
    name>" when the checkpoint is. So results of other checkpoints and datasets sit side by side."""
    trained_on = load_config(run_dir / "config.yaml").to_dict()["data"]
    data = cfg.to_dict()["data"]
    name = ""
    if data != trained_on:
        name += f"_{cfg.data.dataset}" + (f"-split{cfg.data.fold}" if cfg.data.dataset in ("ucf101", "hmdb51") else "")
    if checkpoint and Path(checkpoint).resolve() != (run_dir / "final.pt").resolve():
        name += f"_{Path(checkpoint).stem}"
    return name


def evaluated_on(cfg, identity: dict) -> dict:
    """What a result file records of its evaluation: the checkpoint and the dataset."""
    d = cfg.data
    return {"checkpoint": identity["checkpoint"],
            "data": {"dataset": d.dataset, "root": d.root, "split_dir": d.split_dir, "fold": d.fold,
                     "test_root": d.test_root}}


def video_features(cfg, backbone, transform, device, identity: dict, num_clips: int, cache_dir,
                   progress: bool = True) -> tuple:
    """Train and test features of N uniform clips per video, cached per checkpoint and settings.
    Each split's extraction is announced in a log line and timed; `progress`: a bar on a terminal."""
    splits = []  # built on the first cache miss only, once for both splits

    def compute(train: bool):
        if not splits:
            splits.extend(eval_datasets(cfg, num_clips))
        name = "train" if train else "test"
        dataset, started = splits[0 if train else 1], time.perf_counter()
        log.info("features of the %s split: %d videos x %d clips", name, len(dataset), num_clips)
        features = extract_features(backbone, dataset, transform, device, workers=cfg.data.workers,
                                    progress=f"{name} features" if progress else None)
        log.info("features of the %s split: done in %.0f s", name, time.perf_counter() - started)
        return features

    key = {**identity, "data": cfg.to_dict()["data"], "clips": num_clips,
           "frames": cfg.model.clip_frames, "stride": cfg.model.clip_stride}
    return tuple(cached_features(cache_dir, {**key, "train": t}, lambda t=t: compute(t)) for t in (True, False))


def finetune_config(cfg, run_dir: Path, checkpoint: str | None, recipe: str | None, overrides: list[str],
                    out_dir: Path):
    """The fine-tuning run's config, in three layers, each over the one before:
    1. from the pretrained run (`cfg`, its dataset overrides applied): its data, backbone, clip,
       augmentation, batch size, seed and precision; the supervised method started from its
       checkpoint, no kNN monitor, into `out_dir`; and, for want of a recipe, 10 epochs of the
       library's optimiser (AdamW, cosine schedule) at lr 0.01;
    2. the `recipe` file (configs/finetune/*.yaml): the protocol's optimiser, schedule, epochs and
       batch size;
    3. `overrides` (optim.*, train.*, model.* such as model.dropout).
    A key the recipe or an override sets is not taken from the pretrained run."""
    pretrained = cfg.to_dict()
    inherited = {**{f"data.{k}": v for k, v in pretrained["data"].items()},
                 **{f"model.{k}": pretrained["model"][k]
                    for k in ("backbone", "backbone_kwargs", "clip_frames", "clip_stride", "augment")},
                 **{f"train.{k}": pretrained["train"][k] for k in ("batch_size", "seed", "precision", "channels_last")},
                 "train.knn_every": 0, "train.out_dir": str(out_dir), "train.epochs": 10, "optim.lr": 0.01,
                 "method": "supervised", "train.init_backbone": str(checkpoint or run_dir / "final.pt")}
    in_recipe = _recipe_keys(recipe) if recipe is not None else []
    if fixed := [k for k in in_recipe if k.startswith(PRETRAINED_ONLY)]:
        raise ConfigError(f"{fixed[0]} is the pretrained run's: a fine-tuning recipe does not set it", recipe)

    def in_recipe_or_below(key: str) -> bool:  # the recipe sets the key, a part of it, or a section above it
        return any(r == key or r.startswith(key + ".") or key.startswith(r + ".") for r in in_recipe)

    kept = [f"{k}={json.dumps(v)}" for k, v in inherited.items() if not in_recipe_or_below(k)]
    return load_config(recipe, [*kept, *overrides])


def _recipe_keys(recipe: str) -> list[str]:
    """The dotted keys a recipe file sets (its leaves)."""
    try:
        raw = read_yaml(Path(recipe).read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return []  # load_config then names the file and what is wrong with it

    def leaves(node, prefix=""):
        if not isinstance(node, dict) or not node:
            return [prefix[:-1]] if prefix else []
        return [key for k, v in node.items() for key in leaves(v, f"{prefix}{k}.")]
    return leaves(raw)


def finetune(ft_cfg, num_clips: int, device, progress: bool) -> dict:
    """Fine-tune the whole backbone plus a new linear layer on the labels (the supervised method
    started from the pretrained backbone, `finetune_config`), then test video-level: logits
    averaged over N uniform clips. The test split is opened before training starts. A fine-tuning
    run stopped part-way continues where it stopped; a finished one is only tested."""
    test_set = eval_datasets(ft_cfg, num_clips)[1]
    model = train(ft_cfg, resume=True, progress=progress)["method"]
    model.eval()
    correct = 0
    bar = progress_bar(progress, total=len(test_set), desc="fine-tuned test", unit="video")
    with torch.no_grad():
        for batch in DataLoader(test_set, batch_size=16, num_workers=ft_cfg.data.workers):
            video = batch["video"].to(device)
            b, k = video.shape[:2]
            logits = model.classifier(model.backbone(model.augment.center(video.flatten(0, 1))))
            correct += (logits.view(b, k, -1).mean(1).argmax(1).cpu() == batch["label"]).sum().item()
            bar.update(b)
    bar.close()
    recipe = {"optim": ft_cfg.to_dict()["optim"],
              **{k: getattr(ft_cfg.train, k) for k in ("epochs", "batch_size", "max_steps")}}
    return {"accuracy": correct / len(test_set), "recipe": recipe, "run": ft_cfg.train.out_dir}
