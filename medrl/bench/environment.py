"""What the numbers were measured on: device, library versions, threads, process memory."""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from dataclasses import asdict, dataclass
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


# The /proc/cpuinfo flags that decide which matrix kernels a CPU can run: AVX-512 and its bfloat16
# and VNNI extensions, and Intel's AMX tiles (bfloat16 / int8 matrix units).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuKind:
    """What a CPU is, as far as kernel speed goes: vendor, model name, family / model numbers
    and the kernel flags it has. Two machines of one kind run the same kernels at about the
    same speed; results are kept per kind (`slug`), never compared across kinds."""

    vendor: str  # AuthenticAMD | GenuineIntel | ...
    model_name: str
    family: int | None
    model: int | None
    flags: tuple[str, ...]  # the KERNEL_FLAGS this CPU has, in KERNEL_FLAGS order

    @property
    def slug(self) -> str:
        """A folder name for this kind, e.g. "amd-epyc-f25-m17" or
        "intel-xeon-platinum-8481c-f6-m143-amx" (lowercase, [a-z0-9-] only)."""
        vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(self.vendor, self.vendor)
        name = self.model_name.lower()
        for noise in ("(r)", "(tm)", "processor", "cpu", "@", "amd", "intel"):
            name = name.replace(noise, " ")
        name = re.sub(r"\d+(\.\d+)?\s*ghz", " ", name)
        words = [vendor.lower(), *re.findall(r"[a-z0-9]+", name)]
        if self.family is not None and self.model is not None:
            words.append(f"f{self.family}-m{self.model}")
        if "amx_bf16" in self.flags:
            words.append("amx")
        return "-".join(words)

    def describe(self) -> str:
        """One line for a report: name, vendor / family / model, and every kernel flag."""
        numbers = f"family {self.family} model {self.model}" if self.family is not None else ""
        flags = ", ".join(f"{f} {'yes' if f in self.flags else 'no'}" for f in KERNEL_FLAGS)
        return f"{self.model_name} ({self.vendor} {numbers}; {flags})"


def cpu_kind(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuKind:
    """The CpuKind of this machine, from the first processor block of /proc/cpuinfo (on other
    systems: platform.processor(), no numbers, no flags)."""
    if not cpuinfo.is_file():
        return CpuKind(platform.machine(), platform.processor() or "unknown", None, None, ())
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough: all cores are alike here
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    present = set(fields.get("flags", "").split())

    def number(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    return CpuKind(
        vendor=fields.get("vendor_id", "unknown"),
        model_name=fields.get("model name", platform.processor() or "unknown"),
        family=number("cpu family"),
        model=number("model"),
        flags=tuple(f for f in KERNEL_FLAGS if f in present),
    )


def read_bandwidth(threads: int, size_mib: int = 512, repeats: int = 5) -> float:
    """Memory read bandwidth in bytes per second with `threads` threads: the best of `repeats`
    sums over a float32 buffer of `size_mib` MiB (far larger than any cache), i.e. how fast
    a decode step can at best stream weights that are not in cache. Restores torch's thread
    count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buffer = torch.ones(size_mib * 2**20 // 4, dtype=torch.float32)
        buffer.sum()  # pages touched, kernels warm
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            buffer.sum()
            best = min(best, time.perf_counter() - start)
        return buffer.numel() * 4 / best
    finally:
        torch.set_num_threads(before)


def matmul_rate(threads: int, dtype: str = "float32", size: int = 1024, repeats: int = 5) -> float:
    """Dense matrix product rate in FLOP/s with `threads` threads: the best of `repeats`
    [size, size] @ [size, size] products in `dtype` (float32 | bfloat16), i.e. the most a
    decode forward's products can get from this CPU (a decode step's few rows reach less).
    Restores torch's thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a, b = (
            torch.randn(size, size, generator=generator).to(getattr(torch, dtype)) for _ in range(2)
        )
        a @ b  # kernels warm
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        return 2 * size**3 / best
    finally:
        torch.set_num_threads(before)


def device_name(device: str) -> str:
    """The GPU's name on CUDA, else the CPU's, with the core count."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def slugify(text: str) -> str:
    """Lowercase words of [a-z0-9] joined by "-": a folder name."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))


def machine_slug(environment: dict[str, Any]) -> str:
    """The machine kind a result belongs to: the CPU kind's slug on a CPU, the GPU's name on
    CUDA (e.g. "nvidia-h100-80gb-hbm3")."""
    if environment["device"] == "cuda":
        return slugify(environment["device_name"].split("(")[0])
    return environment["cpu"]["slug"]


def describe(
    device: str, threads: int, bandwidth: bool = False, compute_dtype: str = "float32"
) -> dict[str, Any]:
    """The environment block of a report: device, threads, versions, platform, the CPU's kind
    (every report names the CPU, whatever the device), and with `bandwidth` the measured
    memory read bandwidth (bytes/s) and matrix product rate in `compute_dtype` (FLOP/s; CPU
    runs, for the decode floors)."""
    kind = cpu_kind()
    found = {
        "device": device,
        "device_name": device_name(device),
        "threads": threads,
        "versions": versions(),
        "platform": platform.platform(),
        "cpu": {**asdict(kind), "slug": kind.slug, "description": kind.describe()},
    }
    if bandwidth:
        found["read_bandwidth_bytes_per_s"] = read_bandwidth(threads)
        found["matmul_flops_per_s"] = matmul_rate(threads, compute_dtype)
        found["matmul_dtype"] = compute_dtype
    return found


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
