"""Checkpoints that survive being killed and cannot run code when loaded.

- Written atomically (`data.cache.atomic_write`): to a temporary file in the same folder, flushed
  to disk, then renamed, so a run killed mid-write leaves the previous checkpoint intact and no
  half-written one.
- Read with `torch.load(weights_only=True)`: only tensors and plain containers, never pickled code.
- A checkpoint that cannot be read (cut short, corrupted) is refused with a message naming it, and
  `load_latest` falls back to the previous one.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from hdc_lib.data.cache import atomic_write
from hdc_lib.errors import UserError

log = logging.getLogger(__name__)
NAME = re.compile(r"^ckpt_e(\d+)_s(\d+)\.pt$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; `path` names the file."""


def checkpoint_name(epoch: int, step: int) -> str:
    """Position in training: `epoch` finished epochs plus `step` steps of the next one."""
    return f"ckpt_e{epoch:04d}_s{step:06d}.pt"


def save_checkpoint(path: str | Path, state: dict) -> Path:
    return atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("no such checkpoint", path) from None
    except Exception as err:  # truncated zip, bad magic, or a payload weights_only refuses
        raise CheckpointError(f"cannot be loaded safely ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'unreadable'})", path) from err


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Training checkpoints in `directory`, newest (furthest in training) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(tuple(map(int, m.groups())), p) for p in directory.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_latest(directory: str | Path, map_location="cpu") -> tuple[dict, Path] | None:
    """The newest readable checkpoint; unreadable ones are reported and skipped."""
    for path in list_checkpoints(directory):
        try:
            return load_checkpoint(path, map_location), path
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s", err)
    return None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the `keep` newest training checkpoints."""
    for path in list_checkpoints(directory)[keep:]:
        path.unlink(missing_ok=True)


def backbone_state(model_state: dict) -> dict:
    """The online backbone's weights out of a method's state dict (any method)."""
    prefix = "online.backbone."
    return {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}
