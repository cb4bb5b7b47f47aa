"""Where a benchmark ran: the git commit and the machine, as the reports print them.

Bench's own copies of these helpers, kept here in one place until the project has one module for
them (hdc_lib/provenance.py); reproduce.py has its own as well.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def machine_description() -> str:
    """The report's machine line: architecture, CPU cores, torch version and threads."""
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def device_description(device: torch.device) -> str:
    """A device's name for the paper-preset page: the GPU's name, else the CPU's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
