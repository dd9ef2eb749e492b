"""What the numbers were measured on: device, library versions, threads, process memory."""

from __future__ import annotations

import os
import platform
import resource
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "lightning", "datasets")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package ("not installed" when absent)."""
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The GPU's name on CUDA, else the CPU's, with the core count."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def describe(device: str, threads: int) -> dict[str, Any]:
    return {
        "device": device,
        "device_name": device_name(device),
        "threads": threads,
        "versions": versions(),
        "platform": platform.platform(),
    }


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that pin a worker's BLAS / OpenMP pools to `threads`."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def _status_kib(field: str, status: Path = Path("/proc/self/status")) -> int | None:
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size: VmHWM, or ru_maxrss where /proc is missing."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024


def rss_bytes() -> int | None:
    """The current resident set size (VmRSS), None where /proc is missing."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024
