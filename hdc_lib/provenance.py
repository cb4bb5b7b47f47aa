"""Where a result came from: the commit of the code that produced it and the machine it ran on,
written beside every number the project keeps (records, reports, shipped weights)."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def code_commit() -> str:
    """The commit the code is at, marked "+changes" when hdc_lib/ or configs/ differ from it
    (other edits do not change what a run computes)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    try:
        return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--", "hdc_lib", "configs") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (timings differ between an Intel Xeon with AMX and an AMD EPYC with
    AVX2 only, so every timing names it); the architecture where the system does not say."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | str) -> str:
    """The CPU, its cores, torch's threads, the device and the torch version."""
    return (f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads, "
            f"device {device}, torch {torch.__version__}")


def device_description(device: torch.device) -> str:
    """A device's name for a report: the GPU's name, else the CPU's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
