"""release_file_pages gives back the resident pages of tensors mapped from a file, keeps their
values, and leaves memory that is not file-backed alone."""

from __future__ import annotations

import mmap
import os
import platform
import sys

import pytest
import torch

from medrl.utils import pages


def _kernel_has_pageout() -> bool:
    """MADV_PAGEOUT came with Linux 5.4."""
    if not sys.platform.startswith("linux"):
        return False
    numbers = platform.release().split("-")[0].split(".")
    return tuple(int(n) for n in numbers[:2] if n.isdigit()) >= (5, 4)


linux = pytest.mark.skipif(not _kernel_has_pageout(), reason="madvise MADV_PAGEOUT, /proc")
MIB = 1 << 20


def resident_bytes(tensor: torch.Tensor) -> int:
    """Resident bytes of the mapping that holds `tensor` (/proc/self/smaps)."""
    address = tensor.data_ptr()
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                start, end = (int(part, 16) for part in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "Rss:":
                return int(fields[1]) * 1024
    raise AssertionError("no mapping holds the tensor")


def map_values(path) -> torch.Tensor:
    """16 MiB of float32 values written to `path`, synced, and mapped privately from it, as
    safetensors maps weights."""
    values = torch.arange(4 * MIB, dtype=torch.float32)
    with open(path, "wb") as file:
        file.write(values.numpy().tobytes())
        file.flush()
        os.fsync(file.fileno())
    return torch.from_file(str(path), shared=False, size=values.numel(), dtype=torch.float32)


@pytest.fixture
def mapped(tmp_path) -> torch.Tensor:
    return map_values(tmp_path / "weights.bin")


@linux
def test_a_file_backed_tensor_gives_its_pages_back_and_keeps_its_values(mapped):
    expected = torch.arange(mapped.numel(), dtype=torch.float32)
    assert torch.equal(mapped, expected)  # every page read, so resident
    before = resident_bytes(mapped)
    assert before >= 15 * MIB

    [advised] = pages.release_file_pages([mapped])

    assert advised >= 15 * MIB and advised % mmap.PAGESIZE == 0
    assert resident_bytes(mapped) <= before - 15 * MIB
    assert torch.equal(mapped, expected)  # read again from the file


@linux
def test_memory_that_is_not_file_backed_is_left_alone():
    values = torch.randn(2 * MIB)
    kept = values.clone()
    assert pages.release_file_pages([values]) == [0]
    assert torch.equal(values, kept)


@linux
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_shared_memory_files_are_left_alone(tmp_path):
    """Their pages would leave the process's count without leaving memory."""
    path = f"/dev/shm/medrl-test-pages-{os.getpid()}"
    try:
        shared = map_values(path)
        assert pages.release_file_pages([shared]) == [0]
        assert torch.equal(shared, torch.arange(shared.numel(), dtype=torch.float32))
    finally:
        os.remove(path)


@linux
def test_only_whole_pages_inside_the_tensor_are_advised(mapped):
    # 3 pages starting half a page in: only the 2 whole pages inside are the tensor's alone.
    half_page = mmap.PAGESIZE // 2 // 4
    window = mapped[half_page : half_page + 3 * mmap.PAGESIZE // 4]
    assert pages.release_file_pages([window, mapped[:10]]) == [2 * mmap.PAGESIZE, 0]


def test_without_madvise_nothing_happens(monkeypatch, mapped):
    monkeypatch.setattr(pages, "_madvise", lambda: None)
    assert pages.release_file_pages([mapped]) == [0]
