"""One training loop for every method, on one CPU or on many GPUs under torchrun.

    python -m hdc_lib pretrain --config configs/toy/hdc.yaml               # one process
    torchrun --nproc_per_node=8 -m hdc_lib pretrain --config configs/ucf101/hdc_r2plus1d.yaml

What it guarantees:
- Exact resume. The data order of an epoch, every item's clips and every random augmentation are
  functions of (seed, epoch, step, rank); shuffle BN draws its permutations from the same per-step
  generator as the augmentations; and a checkpoint stores the model (with its momentum encoder,
  queues and level weights), optimiser, schedule, scaler and random-generator states (that
  generator, torch's global CPU generator and, on CUDA, the device's). So `--resume` after a kill
  ends with the same weights as an uninterrupted run (on CPU, bit for bit), queue and shuffle BN
  included. `train.epochs` may grow on resume when the schedule does not depend on the run's
  length (`check_resumable`).
- Checked before the first step: every split the run will read (the train split, and the test
  split when the kNN monitor reads it), the checkpoint it starts from, and the run folder (a new
  run does not silently replace another: `prepare_run_folder`).
- Nothing lost. Checkpoints are atomic; an epoch's checkpoint is written before its kNN check;
  SIGTERM / Ctrl-C write one at the next step boundary and exit (a second Ctrl-C stops at once); a
  non-finite loss stops the run with a message and leaves the last good checkpoint.
- Logs for terminals and clusters alike (`TrainingLog`): a tqdm bar only on a terminal (`progress`),
  and plain lines, one every `train.log_every` steps and one per epoch, whatever the bar (`quiet`
  drops them). Epochs and steps are counted from 1 everywhere: lines, bar, messages and
  metrics.jsonl.
- Device-agnostic. CUDA if present, otherwise CPU; the backbones compute in `train.precision`
  (`auto`: the fastest precision the device computes correctly, hdc_lib/precision.py; fp16 with a
  grad scaler), everything after them in fp32. Under DDP: gloo on CPU, NCCL on CUDA, per-rank
  data shards, keys gathered across ranks inside the losses, optional SyncBatchNorm, rank 0 logs
  and checkpoints, and a stop request is agreed by all ranks before anyone stops.
"""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from hdc_lib.checkpoint import (backbone_state, checkpoint_name, list_checkpoints, load_checkpoint,
                                load_latest, prune_checkpoints, save_checkpoint)
from hdc_lib.config import ConfigError
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.backbones import use_precision
from hdc_lib.errors import UserError
from hdc_lib.experiment import RunConfig, build_dataset, build_method, build_optimizer
from hdc_lib.features import knn_monitor
from hdc_lib.precision import grad_scaler, resolve_precision
from hdc_lib.runtime import Context, progress_bar, setup

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


class ConfigMismatch(ConfigError):
    """The checkpoint to resume from was written by a run with another config."""


class RunFolderInUse(UserError):
    """A new run was asked to train into the folder of another run."""


# What may change between a run and its resumption: where and how it runs and logs, and where a
# smoke run stops, not what it learns. (train.epochs may grow too, see check_resumable.)
RESUMABLE_CHANGES = {"train.device", "train.log_every", "train.tensorboard", "train.keep_checkpoints",
                     "train.checkpoint_every", "train.knn_every", "train.knn_videos", "train.out_dir",
                     "train.max_steps", "data.workers", "data.cache_dir"}
# Schedules whose learning rate at a step does not depend on train.epochs: a run extended on
# resume gets the learning rates a run trained that long from the start would have had.
LENGTH_FREE_SCHEDULES = ("step", "constant")


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(saved: dict, current: dict, path: Path) -> None:
    """Refuse to continue a checkpoint under another config (other weights, say): the result
    would be neither run. Raises ConfigMismatch naming every differing key.

    One change is allowed: more `train.epochs` under a step or constant schedule, whose learning
    rate at every step is the same whatever the run's length, so the extended run ends as a run
    trained that long from the start. A cosine schedule spreads over train.epochs: a longer run is
    another run from its first step, and the refusal says so.
    """
    old, new = _flatten(saved), _flatten(current)
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k, "<missing>") != new.get(k, "<missing>") and k not in RESUMABLE_CHANGES)
    if changed == ["train.epochs"] and new["train.epochs"] > old["train.epochs"] \
            and new.get("optim.schedule") in LENGTH_FREE_SCHEDULES:
        return
    if changed:
        details = ", ".join(f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}" for k in changed)
        extend = ("; more train.epochs continue a step or constant schedule, but the "
                  f"{new.get('optim.schedule')} schedule's learning rates depend on train.epochs, "
                  "so a longer run must start anew" if "train.epochs" in changed else "")
        raise ConfigMismatch(f"written under another config ({details}); resume with the same config, "
                             f"or train into a new train.out_dir{extend}", path)


def epoch_batches(num_items: int, batch_per_rank: int, seed: int, epoch: int, rank: int,
                  world_size: int) -> list[list[int]]:
    """This rank's batches of one epoch: a permutation seeded by (seed, epoch), cut into global
    batches (the last incomplete one dropped), each split into equal per-rank parts. `epoch` is
    the number of epochs finished before it (0 for the first)."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    per_step = batch_per_rank * world_size
    return [order[s * per_step + rank * batch_per_rank: s * per_step + (rank + 1) * batch_per_rank].tolist()
            for s in range(num_items // per_step)]


def step_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank) % (2 ** 63)


def optimiser_step(model: torch.nn.Module, views: dict, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, scheduler=None) -> tuple[torch.Tensor, dict]:
    """One optimiser step as the training loop takes it: `model(views)` gives (loss, logs); a
    non-finite loss raises NonFiniteLoss before anything changes; otherwise the gradients are
    zeroed, the loss back-propagated through the grad scaler (a pass-through unless fp16), the
    optimiser stepped through the scaler, the scaler updated and the scheduler (if any) stepped.
    Returns (loss, logs). The method's momentum encoder and queues move inside `model(views)`."""
    loss, logs = model(views)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"non-finite loss {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    return loss, logs


class _StopRequest:
    """SIGTERM / SIGINT: the first one is acknowledged at once and sets a flag (the loop
    checkpoints at the next step boundary and stops); a second one stops at once
    (KeyboardInterrupt), keeping the last checkpoint written."""

    def __init__(self, announce: bool = True):
        self.signal = None
        self.announce = announce
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.signal = signal.Signals(signum).name
        if self.announce:
            print(f"{self.signal}: stopping after this step and writing a checkpoint; "
                  "press Ctrl-C again to stop at once", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _agreed_stop(stop: _StopRequest, ctx: Context) -> str | None:
    """The stop request, as all ranks agree on it: under DDP a signal that reached one rank a step
    earlier than another would otherwise leave the other waiting in its next all-reduce."""
    if ctx.world_size == 1:
        return stop.signal
    flag = torch.tensor([stop.signal is not None], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return (stop.signal or "SIGTERM") if flag.item() else None


# -- metrics.jsonl ---------------------------------------------------------------------------
def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict]:
    """The records of a run's metrics.jsonl (of one `kind`, "step" or "epoch", if given).

    Epochs and steps count from 1. Files written before they did (their first records say epoch
    0) are read as if written today, so old runs plot and resume alike.
    """
    path = Path(run_dir) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if any(r["epoch"] == 0 for r in records):
        for r in records:
            r["epoch"] += 1
            if r["kind"] == "step":
                r["step"] += 1
    return [r for r in records if kind is None or r["kind"] == kind]


def _truncate_metrics(path: Path, global_step: int, epochs_done: int) -> None:
    """Drop the records a resumed run will write again (everything after its checkpoint)."""
    kept = [r for r in read_metrics(path.parent)
            if (r["kind"] == "step" and r["global_step"] <= global_step)
            or (r["kind"] == "epoch" and r["epoch"] <= epochs_done)]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, minutes = seconds // 3600, seconds // 60 % 60
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds % 60:02d}s" if minutes else f"{seconds}s"


def _rate(value: float) -> str:
    """Clips/s with three significant figures below 100 (a CPU does 0.5-20), whole numbers above."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


class TrainingLog:
    """What a run writes while it trains (rank 0 only): metrics.jsonl, TensorBoard, lines, a bar.

    - metrics.jsonl: a step record every `train.log_every` steps and at each epoch's last step;
      an epoch record per epoch (means of the step logs, lr, clips/s, data wait, kNN accuracy).
    - Lines on stdout, plain text for terminals and cluster logs alike: one every `log_every`
      steps and one per epoch, each with epoch i/N, loss, learning rate, clips/s (every view
      through the backbone, all ranks), the share of time spent waiting for data, the time since
      this process started training and an estimate of the time left. `label` starts each line.
      `quiet` drops them; `step_lines=False` keeps only the epoch lines.
    - A tqdm bar per epoch, only when `progress` and stderr is a terminal (`runtime.progress_bar`).
    """

    def __init__(self, run: "Run", progress: bool, quiet: bool, label: str | None, step_lines: bool = True):
        self.run, self.label = run, label
        self.enabled = run.ctx.is_main
        self.lines = self.enabled and not quiet
        self.step_lines = step_lines
        self.bar_wanted = self.enabled and progress
        self.metrics_path = run.out / "metrics.jsonl"
        self.writer = _tensorboard(run.out) if run.cfg.train.tensorboard and self.enabled else None
        self.bar = None
        self.started, self.first_step = time.perf_counter(), run.global_step

    def record(self, entry: dict) -> None:
        if not self.enabled:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.writer is not None:
            x = entry["global_step"] if entry["kind"] == "step" else entry["epoch"]
            for key, value in entry.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"{entry['kind']}/{key}", value, x)

    def say(self, text: str) -> None:
        if not self.lines:
            return
        text = f"{self.label} {text}" if self.label else text
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text, file=sys.stdout)  # above the bar, which is drawn again below
        else:
            print(text, flush=True)

    def open_bar(self, total: int, initial: int) -> None:
        run = self.run
        self.bar = progress_bar(self.bar_wanted, total=total, initial=initial,
                                desc=f"{self.label or run.cfg.method} epoch {run.epoch + 1}/{run.cfg.train.epochs}")

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def progress(self, what: str, loss: float, lr: float, clips_per_s: float, data_share: float) -> str:
        """One line's text: `what` (epoch i/N, step j/M), then the numbers a user tunes by."""
        run = self.run
        elapsed = time.perf_counter() - self.started
        steps_done = run.global_step - self.first_step
        # time left = seconds per step trained by this process x steps left
        left = elapsed / max(steps_done, 1) * (run.last_step - run.global_step)
        return (f"{what} loss {loss:.4f} lr {lr:.3g} {_rate(clips_per_s)} clips/s data {data_share:.0%} "
                f"elapsed {_duration(elapsed)} left ~{_duration(left)}")


@dataclass
class EpochMeter:
    """Time and clips of the epoch so far: clips/s and the share of time spent waiting for data."""

    started: float = field(default_factory=time.perf_counter)
    data_seconds: float = 0.0
    clips: int = 0

    @property
    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds

    @property
    def data_share(self) -> float:
        return self.data_seconds / self.seconds


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything a training run holds: built by `build_run`, restored by `resume_run`, moved one
    epoch at a time by `train_epoch`. Position: `epoch` epochs finished plus `step` steps of the
    next one."""

    cfg: RunConfig
    ctx: Context
    out: Path
    method: torch.nn.Module    # the method itself
    model: torch.nn.Module     # what a step calls: the method, or its DDP wrapper
    train_set: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    precision: str
    batches_per_epoch: int
    epoch: int = 0
    step: int = 0
    sums: dict = field(default_factory=dict)  # running sums of this epoch's logs (kept in checkpoints)
    count: int = 0
    saved_random: dict | None = None  # generator states that continue a stopped epoch
    unrecorded_epoch: dict | None = None  # a finished epoch's record that never reached metrics.jsonl

    @property
    def global_step(self) -> int:
        return self.epoch * self.batches_per_epoch + self.step

    @property
    def last_step(self) -> int:
        """Where the run ends: every epoch, or `train.max_steps` steps if that comes first."""
        every_epoch = self.cfg.train.epochs * self.batches_per_epoch
        return min(every_epoch, self.cfg.train.max_steps or every_epoch)

    @property
    def step_limit_reached(self) -> bool:
        return self.cfg.train.max_steps is not None and self.global_step >= self.cfg.train.max_steps

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.train.epochs or self.step_limit_reached

    def save(self, generator: torch.Generator, epoch_record: dict | None = None) -> None:
        """A checkpoint of the run where it stands (rank 0), the oldest beyond keep_checkpoints
        deleted. `epoch_record`: the finished epoch's record, written out again by a resume if
        the run dies before it reaches metrics.jsonl (`finish_epoch`)."""
        if not self.ctx.is_main:
            return
        random = {"generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
        if self.ctx.device.type == "cuda":
            random["cuda_rng"] = torch.cuda.get_rng_state(self.ctx.device)
        save_checkpoint(self.out / checkpoint_name(self.epoch, self.step), {
            "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, **random, "epoch_sums": self.sums,
            "epoch_count": self.count, "epoch_record": epoch_record, "config": self.cfg.to_dict()})
        prune_checkpoints(self.out, self.cfg.train.keep_checkpoints)


def prepare_run_folder(out: Path, resume: bool, overwrite: bool, ctx: Context) -> None:
    """A new run does not replace another run's checkpoints without being told to: with
    `overwrite` they are deleted first (with metrics.jsonl and final.pt, so that a later --resume
    cannot pick up a checkpoint of the old run), else RunFolderInUse."""
    found = list_checkpoints(out) + [p for p in (out / "final.pt",) if p.exists()]
    if resume or not found:
        return
    if not overwrite:
        raise RunFolderInUse(f"holds another run ({len(found)} checkpoint files); continue it with "
                             "--resume, replace it with --overwrite, or choose another train.out_dir", out)
    if ctx.is_main:
        log.warning("overwriting the run in %s (%d checkpoint files deleted)", out, len(found))
        for path in [*found, out / "metrics.jsonl"]:
            path.unlink(missing_ok=True)


def build_run(cfg: RunConfig, ctx: Context, progress: bool) -> Run:
    """Data, method, optimiser and schedule of a fresh run; every split the run will read is
    opened first (a missing split file fails here, not after an epoch)."""
    tc = cfg.train
    if tc.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by {ctx.world_size} ranks",
                          key="train.batch_size")
    train_set = build_dataset(cfg, train=True, clip_sampler=None, progress=progress and ctx.is_main)
    if tc.knn_every:  # the kNN monitor reads the test split after the first epoch: open it now
        build_dataset(cfg, train=False, clip_sampler=None, progress=False)
    batches_per_epoch = len(train_set) // tc.batch_size
    if batches_per_epoch == 0:
        raise ConfigError(f"{len(train_set)} training videos are fewer than one batch "
                          f"(train.batch_size={tc.batch_size})", key="train.batch_size")
    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    method = build_method(cfg, num_classes=len(train_set.classes)).to(ctx.device)
    precision = resolve_precision(tc.precision, ctx.device)
    use_precision(method, precision)  # the backbones compute in it; heads, losses, EMAs in fp32
    if tc.channels_last:  # the convolutions then run channels-last (their inputs are converted)
        method.to(memory_format=torch.channels_last_3d)
    train_set.clip_sampler = RandomClipSampler(**method.clip_request())
    if tc.init_backbone:
        method.backbone.load_state_dict(backbone_state(load_checkpoint(tc.init_backbone)["model"]))
    model = method
    if ctx.world_size > 1:
        if tc.sync_bn:
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        # Buffers are not synchronised at each forward pass: each rank's BatchNorm statistics are
        # its own, and the queues are kept equal by gathering the keys (moco.py).
        model = DistributedDataParallel(method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                        forward_sync_buffers=False)
    optimizer, scheduler = build_optimizer(cfg.optim, method.trainable_parameters(), batches_per_epoch, tc.epochs)
    return Run(cfg, ctx, Path(tc.out_dir), method, model, train_set, optimizer, scheduler,
               grad_scaler(precision, ctx.device), precision, batches_per_epoch)


def resume_run(run: Run) -> Path | None:
    """Continue from the newest readable checkpoint in the run folder: its weights, optimiser,
    schedule, scaler, position and, mid-epoch, its random streams (applied by `train_epoch`).
    Returns the checkpoint's path, or None when there is none."""
    found = load_latest(run.out, map_location=run.ctx.device)
    if found is None:
        return None
    state, path = found
    check_resumable(state["config"], run.cfg.to_dict(), path)
    run.method.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step = int(state["epoch"]), int(state["step"])
    run.sums, run.count = dict(state["epoch_sums"]), int(state["epoch_count"])
    if run.step:  # mid-epoch: continue its random streams (an epoch start reseeds them)
        run.saved_random = {k: state[k] for k in ("generator", "torch_rng", "cuda_rng") if k in state}
    elif state.get("epoch_record") and not any(r["epoch"] == run.epoch for r in read_metrics(run.out, "epoch")):
        run.unrecorded_epoch = state["epoch_record"]
    return path


def _epoch_generator(run: Run) -> torch.Generator:
    """The per-step generator of the epoch about to run: the augmentations and shuffle BN's
    permutations draw from it. Seeded by (seed, epoch, rank) at an epoch's start, with torch's
    global generator (which only creating the DataLoader's iterator reads); restored mid-epoch."""
    generator = torch.Generator(run.ctx.device)
    if run.saved_random and "generator" in run.saved_random:
        generator.set_state(run.saved_random["generator"].to(generator.get_state().device))
    else:
        seed = step_seed(run.cfg.train.seed, run.epoch, run.ctx.rank)
        generator.manual_seed(seed)
        torch.manual_seed(seed + 1)
    run.method.key_shuffle_generator = generator
    return generator


def _restore_global_random(run: Run) -> None:
    """Torch's global generators as the checkpoint saved them, after the DataLoader's iterator
    (which draws its base seed from the global generator) is created, exactly where the
    uninterrupted run stood when it saved them."""
    saved, run.saved_random = run.saved_random or {}, None
    if "torch_rng" in saved:
        torch.set_rng_state(saved["torch_rng"])
    if "cuda_rng" in saved and run.ctx.device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], run.ctx.device)


def train_epoch(run: Run, log: TrainingLog, stop: _StopRequest) -> str | None:
    """Train from the run's position to the end of its epoch. Returns None when the epoch is
    finished, else why it stopped early (the signal's name, or "max_steps"), with a checkpoint
    written there."""
    cfg, ctx, tc = run.cfg, run.ctx, run.cfg.train
    run.train_set.set_epoch(run.epoch)
    batches = epoch_batches(len(run.train_set), tc.batch_size // ctx.world_size, tc.seed, run.epoch,
                            ctx.rank, ctx.world_size)
    loader = DataLoader(run.train_set, batch_sampler=batches[run.step:], num_workers=cfg.data.workers,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=False)
    generator = _epoch_generator(run)
    log.open_bar(len(batches), run.step)
    meter, lr = EpochMeter(), run.scheduler.get_last_lr()[0]
    batches_left = iter(loader)
    _restore_global_random(run)
    run.method.train()
    try:
        for step in range(run.step, len(batches)):
            fetch_started = time.perf_counter()
            batch = next(batches_left)
            meter.data_seconds += time.perf_counter() - fetch_started
            windows = batch["video"].to(ctx.device, non_blocking=True)
            # Views in fp32; the backbones compute in `precision`, the rest of the model in fp32.
            views = run.method.make_views(windows, generator=generator)
            views["label"] = batch["label"].to(ctx.device)
            try:
                _, logs = optimiser_step(run.model, views, run.optimizer, run.scaler, run.scheduler)
            except NonFiniteLoss as err:
                raise NonFiniteLoss(f"{err} at epoch {run.epoch + 1}, step {step + 1}; the last good "
                                    f"checkpoint in {run.out} is kept (lower optim.lr or check the data)") from None
            scalars = {k: float(v) for k, v in logs.items()}
            for key, value in scalars.items():
                run.sums[key] = run.sums.get(key, 0.0) + value
            run.count += 1
            run.step = step + 1
            # Clips through the backbone, all ranks together (views x videos).
            meter.clips += ctx.world_size * sum(v.shape[0] for v in views.values() if v.dim() == 5)
            lr = run.scheduler.get_last_lr()[0]
            _log_step(run, log, len(batches), scalars, lr, meter)
            log.bar.set_postfix(loss=f"{scalars['loss/total']:.3f}", clips_s=_rate(meter.clips_per_s), refresh=False)
            log.bar.update(1)
            # train.max_steps mid-epoch stops like a signal; at an epoch's end the epoch finishes.
            stopped = _agreed_stop(stop, ctx) or (
                "max_steps" if run.step_limit_reached and run.step < len(batches) else None)
            if stopped:
                run.save(generator)
                return stopped
    finally:
        log.close_bar()
    run.epoch, run.step = run.epoch + 1, 0
    entry = {"kind": "epoch", "epoch": run.epoch, "seconds": meter.seconds, "lr": lr,
             "clips_per_s": meter.clips_per_s, "data_wait": meter.data_share,
             **{k: v / max(run.count, 1) for k, v in run.sums.items()}}
    run.sums, run.count = {}, 0
    finish_epoch(run, log, entry, generator)
    return None


def _log_step(run: Run, log: TrainingLog, steps_in_epoch: int, scalars: dict, lr: float,
              meter: EpochMeter) -> None:
    """The step record (every log_every steps and at the epoch's last step) and the step line
    (every log_every steps)."""
    tc = run.cfg.train
    every = run.global_step % tc.log_every == 0
    if every or run.step == steps_in_epoch:
        log.record({"kind": "step", "epoch": run.epoch + 1, "step": run.step, "global_step": run.global_step,
                    "lr": lr, **scalars, "clips_per_s": meter.clips_per_s, "data_wait": meter.data_share})
    if every and log.step_lines:
        log.say(log.progress(f"epoch {run.epoch + 1}/{tc.epochs} step {run.step}/{steps_in_epoch}",
                             scalars["loss/total"], lr, meter.clips_per_s, meter.data_share))


def finish_epoch(run: Run, log: TrainingLog, entry: dict, generator: torch.Generator | None) -> None:
    """After an epoch: its checkpoint first (when due), then the kNN check (when due), then its
    record and line. A kNN check that fails thus loses no training; the resume that follows
    writes the record the failure kept out of metrics.jsonl (`generator` None: that case)."""
    tc = run.cfg.train
    if generator is not None and (run.epoch % tc.checkpoint_every == 0 or run.epoch == tc.epochs):
        run.save(generator, epoch_record=entry)
    if tc.knn_every and (run.epoch % tc.knn_every == 0 or run.epoch == tc.epochs):
        entry["knn_acc"] = knn_monitor(run.cfg, run.method, run.ctx)
    log.record(entry)
    knn = f" knn {entry['knn_acc']:.3f}" if entry.get("knn_acc") is not None else ""
    log.say(log.progress(f"epoch {run.epoch}/{tc.epochs} done", entry["loss/total"], entry["lr"],
                         entry["clips_per_s"], entry["data_wait"]) + knn)


def train(cfg: RunConfig, resume: bool = False, progress: bool = True, label: str | None = None,
          quiet: bool = False, overwrite: bool = True, step_lines: bool = True) -> dict:
    """Train `cfg` to the end (or until a stop signal, or `train.max_steps`).

    resume: continue from the newest checkpoint in train.out_dir (a line says so when there is
    none, and a finished run is not trained again). overwrite: without `resume`, whether a run
    already in train.out_dir may be replaced (`hdc pretrain` passes --overwrite; False refuses
    with RunFolderInUse). progress: a tqdm bar on a terminal; quiet: no plain progress lines;
    label (e.g. "tc_only_rev seed0") starts each line, for runs trained side by side; step_lines
    False: only the per-epoch lines (`hdc reproduce`: one line per run per epoch).

    Returns a summary: the run folder, the trained method (the module itself, not a DDP wrapper),
    "interrupted" (the signal's name when one stopped the run), "finished_before" (a resumed run
    that had already finished), "stopped_at_max_steps" and "is_main" (rank 0).
    """
    ctx = setup(cfg.train.device)
    out = Path(cfg.train.out_dir)
    prepare_run_folder(out, resume, overwrite, ctx)
    run = build_run(cfg, ctx, progress)
    resumed_from = resume_run(run) if resume else None
    if ctx.is_main:
        _announce_start(run, resume, resumed_from)
    summary = {"out_dir": str(out), "interrupted": None, "epochs": cfg.train.epochs, "method": run.method,
               "precision": run.precision, "finished_before": False, "stopped_at_max_steps": False,
               "is_main": ctx.is_main}
    training_log = TrainingLog(run, progress, quiet, label, step_lines)
    if run.unrecorded_epoch is not None:
        finish_epoch(run, training_log, run.unrecorded_epoch, generator=None)
    if run.finished and (out / "final.pt").exists():
        if ctx.is_main:
            log.info("the run in %s had already finished (epoch %d/%d, %d steps): nothing to train",
                     out, run.epoch, cfg.train.epochs, run.global_step)
        summary["finished_before"] = True
        return summary
    stopped = None
    with _StopRequest(announce=ctx.is_main) as stop:
        while stopped is None and not run.finished:
            stopped = train_epoch(run, training_log, stop)
    if stopped not in (None, "max_steps"):
        summary["interrupted"] = stopped
        return summary
    summary["stopped_at_max_steps"] = run.epoch < cfg.train.epochs
    if ctx.is_main:
        save_checkpoint(out / "final.pt", {"model": run.method.state_dict(), "config": cfg.to_dict()})
    return summary


def _announce_start(run: Run, resume: bool, resumed_from: Path | None) -> None:
    """Rank 0, before the first step: where the run starts, its config.yaml, metrics.jsonl cut back
    to the checkpoint resumed from."""
    cfg, out = run.cfg, run.out
    if resumed_from is not None:
        done = (f"epoch {run.epoch + 1}/{cfg.train.epochs}, step {run.step}/{run.batches_per_epoch} done"
                if run.step else f"epoch {run.epoch}/{cfg.train.epochs} done")
        log.info("resumed from %s (%s)", resumed_from, done)
    elif resume:
        log.info("no checkpoint to resume from in %s: starting a new run", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if resumed_from is not None:
        _truncate_metrics(out / "metrics.jsonl", run.global_step, run.epoch)
    log.info("backbone precision: %s (train.precision=%s on %s)", run.precision, cfg.train.precision, run.ctx.device)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("train.tensorboard is on but tensorboard is not installed (pip install -e '.[tensorboard]'); "
                    "logging to metrics.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))
