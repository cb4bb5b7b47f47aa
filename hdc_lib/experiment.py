"""A run: its config (YAML + dotted overrides), and the builders that turn it into objects.

    method: hdc                    # coupled | hdc | dclr | supervised
    model: {levels: [layer4]}      # the method's own config dataclass (defaults in its module)
    data: {dataset: toyworld}      # DataConfig
    optim: {lr: 0.002}             # OptimConfig
    train: {epochs: 40}            # TrainConfig

Every value is checked when the config is loaded (unknown keys, wrong types, impossible values such
as a queue that the global batch does not divide), so a typo fails before any training starts.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from hdc_lib.config import ConfigError, from_dict, to_dict
from hdc_lib.coupled import Coupled, CoupledConfig
from hdc_lib.data.datasets import HMDB51, UCF101, VideoDataset, VideoFolder
from hdc_lib.data.toyworld import ToyWorld, ensure_toyworld
from hdc_lib.dclr import DCLR, DCLRConfig
from hdc_lib.hdc import HDC, HDCConfig
from hdc_lib.supervised import Supervised, SupervisedConfig

METHODS = {
    "coupled": (Coupled, CoupledConfig),
    "hdc": (HDC, HDCConfig),
    "dclr": (DCLR, DCLRConfig),
    "supervised": (Supervised, SupervisedConfig),
}


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, but `1e-4` is a float (YAML 1.1 wants `1.0e-4`, a classic config trap)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."))


def read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class DataConfig:
    dataset: Literal["toyworld", "ucf101", "hmdb51", "folder"] = "toyworld"
    root: str = "data/toyworld"            # video root; for the toy world, the world's folder
    split_dir: str | None = None           # official split files (ucf101 / hmdb51)
    fold: int = 1
    test_root: str | None = None           # folder datasets: where the evaluation videos are
    short_side: int | None = None          # resize decoded frames, keeping the aspect ratio
    frame_size: tuple[int, int] | None = None  # or to exactly (h, w): videos of mixed sizes batch
    cache: bool | None = None              # memory-mapped decoded videos; None: toy world only
    cache_dir: str | None = None           # default: <root>/.cache
    workers: int = 0
    on_error: Literal["raise", "skip"] = "skip"
    toyworld: dict = field(default_factory=dict)  # render arguments, see hdc_lib.data.toyworld


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9                  # SGD only
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()       # step schedule: epochs where lr *= gamma
    gamma: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64                   # global: split over the ranks
    seed: int = 0
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    # What the backbone computes in: auto (the fastest correct for the device), fp32, bf16, fp16
    # (hdc_lib/precision.py; heads, losses, maps and EMAs stay fp32 whatever is chosen).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True             # channels_last_3d weights: faster 3D convs (results/bench.md)
    sync_bn: bool = False
    log_every: int = 10                    # steps
    checkpoint_every: int = 1              # epochs
    keep_checkpoints: int = 2
    knn_every: int = 1                     # epochs; 0 = never
    knn_videos: int = 400                  # held-out subset size for the kNN monitor
    out_dir: str = "runs/default"
    init_backbone: str | None = None       # a checkpoint whose backbone starts this run (fine-tuning)
    tensorboard: bool = False
    # Stop after this many optimiser steps in all (a smoke run of a preset: its epochs, schedule
    # and data stay as configured); None: train every epoch.
    max_steps: int | None = None


@dataclass
class RunConfig:
    method: str = "hdc"
    model: Any = None                      # the method's config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"method": self.method, "model": to_dict(self.model), "data": to_dict(self.data),
                "optim": to_dict(self.optim), "train": to_dict(self.train)}


def _without_amp(train: dict | None) -> dict | None:
    """Runs written before train.precision existed say `amp: true` (autocast on CUDA, fp32 on
    CPU) or `amp: false` (fp32): read them as precision auto or fp32, so they still evaluate."""
    if not isinstance(train, dict) or "amp" not in train:
        return train
    train = dict(train)
    amp = train.pop("amp")
    train.setdefault("precision", "auto" if amp else "fp32")
    return train


def _with_later_knobs(method: str, model: dict | None) -> dict | None:
    """Knobs added after runs were recorded, set to what those runs did (like `_without_amp`): HDC
    runs before `sc_pair` existed paired SC's (v1, v3), the reading now called "same_appearance"."""
    if method != "hdc" or not isinstance(model, dict) or "sc_pair" in model:
        return model
    if "spatial" not in model.get("subtasks", ("spatial",)):
        return model
    return {**model, "sc_pair": "same_appearance"}


def saved_run_config(raw: dict) -> RunConfig:
    """A RunConfig from a config that a run or record saved, perhaps before some knobs existed."""
    raw = dict(raw)
    raw["model"] = _with_later_knobs(raw.get("method", "hdc"), raw.get("model"))
    return run_config_from_dict(raw)


def run_config_from_dict(raw: dict) -> RunConfig:
    """Validate and build a RunConfig from a plain dict."""
    raw = dict(raw)
    unknown = sorted(set(raw) - {"method", "model", "data", "optim", "train"})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (known: method, model, data, optim, train)",
                          key=unknown[0])
    method = raw.get("method", "hdc")
    if method not in METHODS:
        raise ConfigError(f"method: {method!r} is not one of {sorted(METHODS)}", key="method")
    cfg = RunConfig(
        method=method,
        model=from_dict(METHODS[method][1], raw.get("model"), "model."),
        data=from_dict(DataConfig, raw.get("data"), "data."),
        optim=from_dict(OptimConfig, raw.get("optim"), "optim."),
        train=from_dict(TrainConfig, _without_amp(raw.get("train")), "train."),
    )
    if cfg.data.dataset == "toyworld":  # the world's arguments fail now, not when it is rendered
        try:
            world = ToyWorld(**cfg.data.toyworld)
        except (TypeError, ConfigError) as err:
            raise ConfigError(f"data.toyworld: {err}", key="data.toyworld") from err
        # Every argument, defaults included, so that a run records the world it saw: when a
        # default changes, a run of the old world no longer passes for one of the new.
        cfg.data.toyworld = asdict(world)
    # Counts and periods a run divides by or keeps: out of range, they would fail (or delete every
    # checkpoint) hours in rather than now.
    minimum = {"epochs": 1, "batch_size": 1, "log_every": 1, "checkpoint_every": 1,
               "keep_checkpoints": 1, "knn_every": 0, "knn_videos": 1}
    for key, least in minimum.items():
        if getattr(cfg.train, key) < least:
            raise ConfigError(f"train.{key} must be >= {least}, got {getattr(cfg.train, key)}",
                              key=f"train.{key}")
    if cfg.train.max_steps is not None and cfg.train.max_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1 (or null), got {cfg.train.max_steps}",
                          key="train.max_steps")
    if cfg.data.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {cfg.data.workers}", key="data.workers")
    queue = getattr(cfg.model, "queue_size", 0)
    if queue and queue % cfg.train.batch_size:
        raise ConfigError(f"model.queue_size={queue} must be a multiple of the global batch "
                          f"train.batch_size={cfg.train.batch_size} (the queue advances a batch at a time)",
                          key="model.queue_size")
    groups = getattr(cfg.model, "shuffle_bn_groups", 0)
    if groups and cfg.train.batch_size % groups:
        raise ConfigError(f"model.shuffle_bn_groups={groups} must divide the global batch "
                          f"train.batch_size={cfg.train.batch_size} (the key pass runs in equal groups)",
                          key="model.shuffle_bn_groups")
    if groups and cfg.train.sync_bn:
        # SyncBatchNorm would pool every BatchNorm's statistics over all GPUs, the momentum
        # encoder's too, so each shuffled key group would no longer see only its own statistics.
        raise ConfigError(f"train.sync_bn=true undoes model.shuffle_bn_groups={groups}: SyncBatchNorm pools the key "
                          "pass's BatchNorm statistics over every GPU, which shuffle BN exists to prevent; "
                          "use one of the two (model.shuffle_bn_groups=0 for SyncBatchNorm)",
                          key="model.shuffle_bn_groups")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.optim.lr}", key="optim.lr")
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`a.b.c=value` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    raw = read_yaml(yaml.safe_dump(raw)) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section", key=key)
        try:
            node[leaf] = read_yaml(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: {yaml_problem(err)[0]}", key=key) from err
    return raw


def yaml_problem(err: yaml.YAMLError) -> tuple[str, int | None]:
    """A YAML error in one line (PyYAML's own spans several, with a caret), and its 1-based line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return f"not valid YAML: {problem}", None
    return f"not valid YAML: {problem} (column {mark.column + 1})", mark.line + 1


def key_line(text: str, key: str | None) -> int | None:
    """The 1-based line of dotted `key` (list indices ignored) in YAML `text`, or of its deepest
    parent there; None when the text does not have the key's first part."""
    node, line = yaml.compose(text, Loader=_Loader), None
    for part in re.sub(r"\[\d+\]", "", key or "").split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        entry = next((entry for entry in node.value if entry[0].value == part), None)
        if entry is None:
            break
        line, node = entry[0].start_mark.line + 1, entry[1]
    return line


def _overridden(key: str | None, overrides: list[str]) -> bool:
    """Whether an override set `key`, one of its parents or one of its children."""
    key = re.sub(r"\[\d+\]", "", key or "")
    set_keys = [item.partition("=")[0] for item in overrides]
    return bool(key) and any(k == key or key.startswith(k + ".") or k.startswith(key + ".")
                             for k in set_keys)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config (safe loader), apply dotted overrides, validate.

    A ConfigError says where the bad value came from: the file and the line of its key, or
    (without a file) the override that set it.
    """
    overrides, text, raw = list(overrides), None, {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("no such config file", path) from None
        except IsADirectoryError:
            raise ConfigError("is a folder, not a config file", path) from None
        except OSError as err:
            raise ConfigError(f"cannot be read ({err.strerror})", path) from None
        except UnicodeDecodeError:
            raise ConfigError("not UTF-8 text, so not a YAML config", path) from None
        try:
            raw = read_yaml(text) or {}
        except yaml.YAMLError as err:
            reason, line = yaml_problem(err)
            raise ConfigError(reason, path, line) from err
        if not isinstance(raw, dict):
            raise ConfigError("the top level must be a mapping", path)
    raw = apply_overrides(raw, overrides)
    try:
        return run_config_from_dict(raw)
    except ConfigError as err:
        if text is None or _overridden(err.key, overrides):
            raise
        raise ConfigError(err.reason, path, key_line(text, err.key), err.key) from err


# -- builders --------------------------------------------------------------------------------
def build_method(cfg: RunConfig, num_classes: int | None = None) -> torch.nn.Module:
    model_cls = METHODS[cfg.method][0]
    if cfg.method == "supervised":
        if num_classes is None:
            raise ValueError("the supervised method needs the number of classes")
        return model_cls(cfg.model, num_classes)
    return model_cls(cfg.model)


def build_optimizer(cfg: OptimConfig, parameters, steps_per_epoch: int, epochs: int):
    """Optimizer and a per-step LambdaLR: linear warm-up, then cosine, step or constant."""
    if cfg.name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, steps_per_epoch * epochs)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.schedule == "step":
            epoch = step // max(1, steps_per_epoch)
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_dataset(cfg: RunConfig, train: bool, clip_sampler, progress: bool = True) -> VideoDataset:
    """The train or test split of the configured dataset (the toy world is rendered if missing,
    with a progress bar when `progress`)."""
    d = cfg.data
    root = Path(d.root)
    cache = d.cache if d.cache is not None else d.dataset == "toyworld"
    options = {"clip_sampler": clip_sampler, "short_side": d.short_side,
               "frame_size": d.frame_size, "seed": cfg.train.seed,
               "on_error": d.on_error,
               "cache_dir": (d.cache_dir or root / ".cache") if cache else None}
    if d.dataset == "toyworld":
        ensure_toyworld(root, progress=progress, **d.toyworld)
        return UCF101(root / "videos", root / "splits", fold=1, train=train, **options)
    if d.split_dir is None and d.dataset in ("ucf101", "hmdb51"):
        raise ConfigError(f"data.split_dir is required for {d.dataset}")
    if d.dataset == "ucf101":
        return UCF101(root, d.split_dir, fold=d.fold, train=train, **options)
    if d.dataset == "hmdb51":
        return HMDB51(root, d.split_dir, fold=d.fold, train=train, **options)
    if not train and d.test_root is None:
        raise ConfigError("data.test_root is required to evaluate a folder dataset")
    return VideoFolder(root if train else d.test_root, **options)
