"""One training loop for every method, on one CPU or on many GPUs under torchrun.

    python -m hdc_lib pretrain --config configs/toy/hdc.yaml               # one process
    torchrun --nproc_per_node=8 -m hdc_lib pretrain --config configs/ucf101/hdc_r2plus1d.yaml

What it guarantees:
- Exact resume. The data order of an epoch, every item's clips and every random augmentation are
  functions of (seed, epoch, step, rank), and a checkpoint stores the model (with its momentum
  encoder, queues and level weights), optimiser, schedule, scaler and random-generator states. So
  `--resume` after a kill ends with the same weights as an uninterrupted run (on CPU, bit for bit).
- Nothing lost. Checkpoints are atomic; SIGTERM / Ctrl-C write one before exiting; a non-finite
  loss stops the run with a message and leaves the last good checkpoint.
- Device-agnostic. CUDA if present, otherwise CPU; the backbones compute in `train.precision`
  (`auto`: the fastest precision the device computes correctly, hdc_lib/precision.py; fp16 with a
  grad scaler), everything after them in fp32. Under DDP: gloo on CPU, NCCL on CUDA, per-rank
  data shards, keys gathered across ranks inside the losses, optional SyncBatchNorm, rank 0 logs
  and checkpoints.
"""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from hdc_lib.checkpoint import (backbone_state, checkpoint_name, load_checkpoint, load_latest,
                                prune_checkpoints, save_checkpoint)
from hdc_lib.config import ConfigError
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.backbones import use_precision
from hdc_lib.experiment import RunConfig, build_dataset, build_method, build_optimizer
from hdc_lib.features import knn_monitor
from hdc_lib.precision import grad_scaler, resolve_precision
from hdc_lib.runtime import setup

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


class ConfigMismatch(ConfigError):
    """The checkpoint to resume from was written by a run with another config."""


# What may change between a run and its resumption: where and how it runs and logs, not what it learns.
RESUMABLE_CHANGES = {"train.device", "train.log_every", "train.tensorboard", "train.keep_checkpoints",
                     "train.checkpoint_every", "train.knn_every", "train.knn_videos", "train.out_dir",
                     "data.workers", "data.cache_dir"}


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(saved: dict, current: dict, path: Path) -> None:
    """Refuse to continue a checkpoint under another config (e.g. more epochs, other weights): the
    result would be neither run. Raises ConfigMismatch naming every differing key."""
    old, new = _flatten(saved), _flatten(current)
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k, "<missing>") != new.get(k, "<missing>") and k not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}" for k in changed)
        raise ConfigMismatch(f"written under another config ({details}); resume with the same config, "
                             "or train into a new train.out_dir", path)


def epoch_batches(num_items: int, batch_per_rank: int, seed: int, epoch: int, rank: int,
                  world_size: int) -> list[list[int]]:
    """This rank's batches of one epoch: a permutation seeded by (seed, epoch), cut into global
    batches (the last incomplete one dropped), each split into equal per-rank parts."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    per_step = batch_per_rank * world_size
    return [order[s * per_step + rank * batch_per_rank: s * per_step + (rank + 1) * batch_per_rank].tolist()
            for s in range(num_items // per_step)]


def step_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank) % (2 ** 63)


class _StopRequest:
    """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary and stops."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _scalar_logs(logs: dict) -> dict:
    return {k: float(v) for k, v in logs.items()}


def _truncate_metrics(path: Path, global_step: int, epoch: int) -> None:
    """Drop the records a resumed run will write again (everything after its checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if (record["kind"] == "step" and record["global_step"] <= global_step) or \
                (record["kind"] == "epoch" and record["epoch"] < epoch):
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))


def train(cfg: RunConfig, resume: bool = False, progress: bool = True, label: str | None = None) -> dict:
    """Train `cfg` to the end (or until a stop signal).

    `label` (e.g. "tc_only_rev seed0") starts every per-epoch line, so that the lines of runs
    trained side by side can be told apart.

    Returns a summary: the run folder, the trained method (the module itself, not a DDP wrapper)
    and, when a signal stopped the run, its name under "interrupted".
    """
    ctx = setup(cfg.train.device)
    out = Path(cfg.train.out_dir)
    tc = cfg.train
    if tc.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by {ctx.world_size} ranks",
                          key="train.batch_size")
    batch_per_rank = tc.batch_size // ctx.world_size

    train_set = build_dataset(cfg, train=True, clip_sampler=None, progress=progress and ctx.is_main)
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
        model = DistributedDataParallel(method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                        broadcast_buffers=False)
    batches_per_epoch = len(train_set) // tc.batch_size
    if batches_per_epoch == 0:
        raise ConfigError(f"{len(train_set)} training videos are fewer than one batch "
                          f"(train.batch_size={tc.batch_size})", key="train.batch_size")
    optimizer, scheduler = build_optimizer(cfg.optim, method.trainable_parameters(), batches_per_epoch, tc.epochs)
    scaler = grad_scaler(precision, ctx.device)

    epoch, start_step = 0, 0
    generator_state = None
    sums, count = {}, 0  # running sums of this epoch's logs (kept in checkpoints)
    if resume and (found := load_latest(out, map_location=ctx.device)):
        state, path = found
        check_resumable(state["config"], cfg.to_dict(), path)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        epoch, start_step = int(state["epoch"]), int(state["step"])
        if start_step:  # mid-epoch: continue its random streams (an epoch start reseeds them)
            generator_state = state["generator"]
            torch.set_rng_state(state["torch_rng"])
        sums, count = dict(state["epoch_sums"]), int(state["epoch_count"])
        if ctx.is_main:
            log.info("resumed from %s (epoch %d, step %d)", path, epoch, start_step)
    metrics_path = out / "metrics.jsonl"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if resume:
            _truncate_metrics(metrics_path, epoch * batches_per_epoch + start_step, epoch)
        else:
            metrics_path.unlink(missing_ok=True)
    writer = _tensorboard(out) if tc.tensorboard and ctx.is_main else None

    def checkpoint(at_epoch: int, at_step: int, generator: torch.Generator) -> None:
        if not ctx.is_main:
            return
        save_checkpoint(out / checkpoint_name(at_epoch, at_step), {
            "model": method.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": at_epoch, "step": at_step, "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "epoch_sums": sums, "epoch_count": count,
            "config": cfg.to_dict()})
        prune_checkpoints(out, tc.keep_checkpoints)

    def record(entry: dict) -> None:
        if ctx.is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            if writer is not None:
                for key, value in entry.items():
                    if isinstance(value, float):
                        writer.add_scalar(key, value, entry.get("global_step", entry.get("epoch", 0)))

    summary = {"out_dir": str(out), "interrupted": None, "epochs": tc.epochs, "method": method,
               "precision": precision}
    if ctx.is_main:
        log.info("backbone precision: %s (train.precision=%s on %s)", precision, tc.precision, ctx.device)
    started, first_epoch = time.perf_counter(), epoch
    with _StopRequest() as stop:
        while epoch < tc.epochs:
            train_set.set_epoch(epoch)
            batches = epoch_batches(len(train_set), batch_per_rank, tc.seed, epoch, ctx.rank, ctx.world_size)
            loader = DataLoader(train_set, batch_sampler=batches[start_step:], num_workers=cfg.data.workers,
                                pin_memory=ctx.device.type == "cuda", persistent_workers=False)
            generator = torch.Generator(ctx.device)
            if generator_state is not None:
                generator.set_state(generator_state.to(generator.get_state().device))
                generator_state = None
            else:
                generator.manual_seed(step_seed(tc.seed, epoch, ctx.rank))
                torch.manual_seed(step_seed(tc.seed, epoch, ctx.rank) + 1)
            method.train()
            bar = _progress(progress and ctx.is_main, total=len(batches), initial=start_step,
                            desc=f"{cfg.method} epoch {epoch + 1}/{tc.epochs}")
            tick, clips_seen = time.perf_counter(), 0
            for step, batch in enumerate(loader, start=start_step):
                windows = batch["video"].to(ctx.device, non_blocking=True)
                # Views in fp32; the backbones compute in `precision`, the rest of the model in fp32.
                views = method.make_views(windows, generator=generator)
                views["label"] = batch["label"].to(ctx.device)
                loss, logs = model(views)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(
                        f"non-finite loss {loss.item()} at epoch {epoch + 1}, step {step}; the last good "
                        f"checkpoint in {out} is kept (lower optim.lr or check the data)")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                scalars = _scalar_logs(logs)
                for key, value in scalars.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                # Clips through the backbone per second, all ranks together (views x videos).
                clips_seen += ctx.world_size * sum(v.shape[0] for v in views.values() if v.dim() == 5)
                clips_per_s = clips_seen / max(time.perf_counter() - tick, 1e-9)
                global_step = epoch * batches_per_epoch + step + 1
                if global_step % tc.log_every == 0 or step + 1 == len(batches):
                    record({"kind": "step", "epoch": epoch, "step": step, "global_step": global_step,
                            "lr": scheduler.get_last_lr()[0], **scalars, "clips_per_s": clips_per_s})
                bar.update(1)
                bar.set_postfix(loss=f"{scalars['loss/total']:.3f}", clips_s=f"{clips_per_s:.0f}")
                if stop.signal:
                    checkpoint(epoch, step + 1, generator)
                    summary["interrupted"] = stop.signal
                    bar.close()
                    return summary
            bar.close()
            start_step = 0
            epoch += 1
            entry = {"kind": "epoch", "epoch": epoch - 1, "seconds": time.perf_counter() - tick,
                     **{k: v / max(count, 1) for k, v in sums.items()}}
            sums, count = {}, 0
            if tc.knn_every and (epoch % tc.knn_every == 0 or epoch == tc.epochs):
                entry["knn_acc"] = knn_monitor(cfg, method, ctx)
            record(entry)
            if ctx.is_main and progress:
                shown = {k: round(v, 4) for k, v in entry.items() if k in ("loss/total", "knn_acc")}
                elapsed = time.perf_counter() - started
                # time left = elapsed per epoch trained by this call x epochs left
                left = elapsed / (epoch - first_epoch) * (tc.epochs - epoch)
                print(f"{label + ' ' if label else ''}epoch {epoch}/{tc.epochs} {shown} "
                      f"elapsed {elapsed:.0f} s, about {left:.0f} s left", flush=True)
            if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs:
                checkpoint(epoch, 0, generator)
    if ctx.is_main:
        save_checkpoint(out / "final.pt", {"model": method.state_dict(), "config": cfg.to_dict()})
    return summary


def _progress(enabled: bool, **kw):
    from tqdm.auto import tqdm
    return tqdm(disable=not enabled, leave=False, dynamic_ncols=True, **kw)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("train.tensorboard is on but tensorboard is not installed; logging to JSONL only")
        return None
    return SummaryWriter(str(out / "tensorboard"))
