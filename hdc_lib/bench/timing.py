"""The measuring instruments of `hdc bench`: interleaved median times, peak memory, FLOPs."""
from __future__ import annotations

import itertools
import statistics
import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a clock reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(runs: dict, repeats: int, device=torch.device("cpu"), warmup: int = 1,
                        clock=None) -> dict:
    """Median seconds of each zero-argument callable in `runs`, after `warmup` calls each.

    The calls are interleaved (a, b, a, b, ...) so every callable sees the same machine load.
    `clock` is wall time (time.perf_counter) unless given, e.g. time.process_time: this process's
    CPU time, which other jobs do not inflate (with one thread; more threads add their spin-waits).
    """
    clock = clock or time.perf_counter
    for run in runs.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = clock()
            run()
            synchronize(device)
            times[name].append(clock() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def peak_memory(step, device: torch.device) -> int:
    """Peak bytes allocated during one call of `step` above what was allocated before it.

    CUDA: the allocator's peak counter. CPU: the profiler's allocation events in time order
    (each op's own allocations and frees), accumulated; the maximum of the running sum.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(prof.events(), key=lambda event: event.time_range.start)
    running = itertools.accumulate(event.self_cpu_memory_usage for event in events)
    return max(0, max(running, default=0))


def step_flops(step) -> int:
    """Floating-point operations of one call of `step` (torch's FLOP counter: convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()
