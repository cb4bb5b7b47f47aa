"""Where a run executes: the process's rank, its device, and the host-memory policy.

`setup` is the first thing a command that trains or evaluates calls: under torchrun (RANK and
WORLD_SIZE set) it joins the process group (NCCL on CUDA, gloo on CPU); it picks the device (CUDA
if present, else CPU) and makes glibc keep freed memory. Nothing here knows about methods or data,
so training, evaluation and the reproduction all start from it. `progress_bar` decides where a
progress bar may be drawn: on a terminal only.
"""
from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    """Where this process runs: its rank among `world_size` and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def keep_freed_memory() -> None:
    """Keep freed host memory in the process instead of handing it back to the kernel (glibc).

    A step frees and re-allocates the same buffers of a few MB every time. glibc's defaults return
    such blocks to the kernel (mmap, heap trimming) and then page-fault them in again, zeroed: about
    a third of the CPU time of the toy augmentation (results/bench.md). With a fixed 32 MB mmap
    threshold (glibc's maximum) and no trimming, the heap stays at its peak and is reused.
    Nothing happens where glibc's mallopt is missing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 2 ** 20)
    mallopt(m_trim_threshold, 2 ** 31 - 1)


def setup(device: str = "auto") -> Context:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set); pick the device.
    Also keeps freed host memory in the process (`keep_freed_memory`)."""
    keep_freed_memory()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Context(rank=rank, world_size=world_size, device=dev)


def progress_bar(enabled: bool, **options):
    """A tqdm bar (on stderr) when `enabled` and stderr is a terminal; else a silent one that
    still counts. A bar written to a file (a cluster job's log) is a stream of carriage returns,
    so there the plain lines of training and evaluation report progress instead."""
    from tqdm.auto import tqdm
    return tqdm(disable=not (enabled and sys.stderr.isatty()), leave=False, dynamic_ncols=True, **options)
