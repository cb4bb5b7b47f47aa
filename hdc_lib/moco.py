"""MoCo machinery: key queue, momentum (EMA) encoder update, cross-rank gather and shuffle BN.

Everything works in one process (no torch.distributed) and under DDP. When a process group is
initialised, keys are gathered from all ranks before they are enqueued, so every rank holds the
same queue and the negatives number the global batch, and the batch shuffle mixes
samples across ranks (MoCo's shuffle BN).

Shuffle BN (``shuffle_bn_forward``): a BatchNorm layer normalises each sample with statistics of
the whole sub-batch it runs in. If a query and its positive key were normalised over the same
sub-batch, the pair would share those statistics, a shortcut that tells the positive from keys
normalised elsewhere (MoCo, section 3.3). The key pass therefore runs on a random permutation of
the global batch cut into G groups, each with its own statistics, so which videos share a key's
statistics is random. Under DDP the groups are spread over the ranks (G = world size is MoCo's
own set-up); in one process the G groups run one after another, which is what G ranks would
compute, so the keys' statistics do not depend on how many GPUs a run has (the query pass still
normalises over each rank's whole batch).
"""

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _world() -> tuple[int, int]:
    """(world size, rank); (1, 0) when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


@torch.no_grad()
def gather_from_all_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) of every rank along dim 0 in rank order: (world_size * B, ...).

    Identity in a single process. No gradient flows through (the result is detached), as in MoCo:
    only keys, which come from the no-grad momentum encoder, are gathered. Every rank must pass the
    same shape.
    """
    world_size, _ = _world()
    if world_size == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class _GatherWithGradient(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        # d(sum_r loss_r)/d(this rank's rows) = sum over ranks r of the gradient rank r's loss
        # sends them: every rank's gradients summed, this rank's slice kept.
        summed = torch.stack(grads)
        dist.all_reduce(summed)
        return summed[dist.get_rank()]


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """`gather_from_all_ranks` with gradient: every rank's loss sends gradient back to the rank
    whose rows it read, so the DDP-averaged gradient equals that of the loss over the global batch
    (the contrastive batch negatives, contrastive.py). Identity in a single process."""
    if _world()[0] == 1:
        return tensor
    return torch.cat(_GatherWithGradient.apply(tensor.contiguous()))


@torch.no_grad()
def batch_shuffle(*tensors: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """Permute the batch so BatchNorm statistics of the key pass cannot leak which key matches which
    query (MoCo's shuffle BN). Returns ``(*shuffled, restore_index)``.

    All tensors (B, ...) get the same permutation, so data that must stay aligned with the keys
    (DCLR's key-side activation maps) can be shuffled with them. Single process: a random
    permutation of the batch. DDP: the global batch is gathered, permuted with a permutation drawn
    on rank 0 and broadcast, and each rank keeps its slice, so a rank's BatchNorm sees samples of
    other ranks. ``restore_index`` (global batch,) undoes it in ``batch_unshuffle``. No gradient.
    The permutation is drawn from ``generator`` (on any device) when one is given, so a training
    run that saves the generator's state draws the same permutations after a resume; else from
    torch's global generator.
    """
    world_size, rank = _world()
    gathered = [gather_from_all_ranks(t) for t in tensors]
    draw_device = generator.device if generator is not None else gathered[0].device
    permutation = torch.randperm(gathered[0].shape[0], generator=generator,
                                 device=draw_device).to(gathered[0].device)
    if world_size > 1:
        dist.broadcast(permutation, src=0)
    this_rank = permutation.view(world_size, -1)[rank]
    return (*(t[this_rank] for t in gathered), torch.argsort(permutation))


@torch.no_grad()
def batch_unshuffle(tensor: torch.Tensor, restore_index: torch.Tensor) -> torch.Tensor:
    """Put outputs (B, ...) computed on a ``batch_shuffle``d batch back in this rank's original order."""
    world_size, rank = _world()
    return gather_from_all_ranks(tensor)[restore_index.view(world_size, -1)[rank]]


@torch.no_grad()
def shuffle_bn_forward(encode: Callable[..., dict], tensors: Sequence[torch.Tensor], groups: int,
                       generator: torch.Generator | None = None) -> dict:
    """``encode(*tensors)`` with shuffle BN: on a permutation of the global batch, in ``groups``
    sub-batches that each get their own BatchNorm statistics. No gradient.

    tensors: (B, ...) each, one row per video of this rank, e.g. one tensor per clip of a video
    (a video's clips stay together, as they would on one rank). encode:
    the clips of n videos -> {name: (n, ...)}, one output row per video; it is called once per
    group, so each call's BatchNorm (train mode, as MoCo's key encoder) sees only that group.
    Returns {name: (B, ...)} in this rank's original order. ``groups`` counts the groups of the
    global batch: a multiple of the world size (each rank runs groups / world_size of them) that
    divides the global batch. ``generator``: where the permutation is drawn (``batch_shuffle``).
    """
    world_size, _ = _world()
    if groups < 1 or groups % world_size:
        raise ValueError(f"moco.py: shuffle_bn_groups={groups} must be a positive multiple of the {world_size} ranks")
    *shuffled, restore = batch_shuffle(*tensors, generator=generator)
    local_groups = groups // world_size
    videos = shuffled[0].shape[0]
    if videos % local_groups:
        raise ValueError(f"moco.py: shuffle_bn_groups={groups} does not divide the global batch {videos * world_size}")
    size = videos // local_groups
    outputs = [encode(*(t[start : start + size] for t in shuffled)) for start in range(0, videos, size)]
    return {name: batch_unshuffle(torch.cat([out[name] for out in outputs]), restore) for name in outputs[0]}


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """Move the momentum encoder ``target`` towards ``source`` in place, over parameters only.

    Buffers (BatchNorm running statistics) are not copied, as in MoCo and the official DCLR: the
    momentum encoder runs its own train-mode forward passes on the keys, which keep its running
    statistics current, so it can be evaluated as it is.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"moco.py: momentum must be in [0, 1], got {momentum}")
    for target_param, source_param in zip(target.parameters(), source.parameters(), strict=True):
        # theta_target = m * theta_target + (1 - m) * theta_source
        target_param.lerp_(source_param.detach(), 1.0 - momentum)


class KeyQueue(nn.Module):
    """FIFO queue(s) of L2-normalised keys, the MoCo negatives, as buffers (saved with the model).

    ``KeyQueue(size, dim)`` holds one queue, read as ``queue.keys`` (size, dim) and filled with
    ``enqueue(keys)``. ``KeyQueue(size, {"vv": 128, "vs": 128, ...})`` holds several named queues with
    one shared pointer, read as ``queue["vv"]`` and filled with ``enqueue(vv=..., vs=..., ...)``: slot i
    of every queue then holds data of the same past sample, which DCLR's cross-video search needs
    (it ranks slots by one queue and uses them as positives in another).

    Queues start as random unit vectors drawn from a fixed seed, so all DDP ranks start identical.
    ``enqueue`` gathers the keys of all ranks first and writes the global batch as one contiguous
    slice at the pointer, oldest entries first, wrapping to the start. Like MoCo, the size must be a
    multiple of the global batch, so a slice never runs past the end; this also catches a smaller
    last batch (use ``drop_last=True``).
    """

    def __init__(self, size: int, dim: int | Mapping[str, int], seed: int = 0):
        super().__init__()
        dims = {"keys": dim} if isinstance(dim, int) else dict(dim)
        if size < 1 or not dims:
            raise ValueError(f"moco.py: KeyQueue needs size >= 1 and at least one queue, got size={size}, dim={dim}")
        self.size = size
        self.names = tuple(dims)
        generator = torch.Generator().manual_seed(seed)
        for name, d in dims.items():
            self.register_buffer(f"queue_{name}", F.normalize(torch.randn(size, d, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))

    def __getitem__(self, name: str) -> torch.Tensor:
        """A copy (size, dim) of queue ``name``: a later ``enqueue`` must not change tensors that a
        loss has already saved for its backward pass."""
        if name not in self.names:
            raise KeyError(f"moco.py: no queue named {name!r}; queues are {self.names}")
        return getattr(self, f"queue_{name}").clone()

    @property
    def is_full(self) -> bool:
        """Whether every slot holds a real key (the random initial vectors are all overwritten)."""
        return bool(self.filled)

    @property
    def keys(self) -> torch.Tensor:
        """The single queue (size, dim) of ``KeyQueue(size, dim)``."""
        return self["keys"]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor | None = None, /, **named_keys: torch.Tensor) -> None:
        """Append this step's keys (B, dim) of every rank, replacing the oldest entries.

        Pass one tensor for a single queue, or one keyword per named queue (all of them, same B).
        """
        batch = {"keys": keys} if keys is not None else named_keys
        if set(batch) != set(self.names) or (keys is not None and named_keys):
            raise ValueError(f"moco.py: enqueue needs keys for exactly the queues {self.names}, got {sorted(batch)}")
        gathered = {name: gather_from_all_ranks(k) for name, k in batch.items()}
        global_batch = {k.shape[0] for k in gathered.values()}
        if len(global_batch) != 1:
            raise ValueError(f"moco.py: all queues must receive the same number of keys, got {sorted(global_batch)}")
        (n,) = global_batch
        if self.size % n:
            raise ValueError(
                f"moco.py: queue size {self.size} is not a multiple of the global batch {n}; each step writes"
                " one contiguous slice (MoCo's pointer logic), so choose a size divisible by the global batch"
                " and drop the last incomplete batch"
            )
        start = int(self.pointer)
        for name, k in gathered.items():
            getattr(self, f"queue_{name}")[start : start + n] = F.normalize(k, dim=1)
        self.pointer.fill_((start + n) % self.size)
        self.filled.logical_or_(torch.tensor(start + n >= self.size))
