"""release_file_pages gives back the resident pages of tensors mapped from a file, keeps their
values, and leaves memory that is not file-backed alone."""

from __future__ import annotations

import mmap
import sys

import pytest
import torch

from medrl.utils import pages

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise, /proc")
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


@pytest.fixture
def mapped(tmp_path) -> torch.Tensor:
    """16 MiB of float32 values mapped privately from a file, as safetensors maps weights."""
    values = torch.arange(4 * MIB, dtype=torch.float32)
    path = tmp_path / "weights.bin"
    path.write_bytes(values.numpy().tobytes())
    return torch.from_file(str(path), shared=False, size=values.numel(), dtype=torch.float32)


@linux
def test_a_file_backed_tensor_gives_its_pages_back_and_keeps_its_values(mapped):
    expected = torch.arange(mapped.numel(), dtype=torch.float32)
    assert torch.equal(mapped, expected)  # every page read, so resident
    before = resident_bytes(mapped)
    assert before >= 15 * MIB

    advised = pages.release_file_pages([mapped])

    assert advised >= 15 * MIB and advised % mmap.PAGESIZE == 0
    assert resident_bytes(mapped) <= before - 15 * MIB
    assert torch.equal(mapped, expected)  # read again from the file


@linux
def test_memory_that_is_not_file_backed_is_left_alone():
    values = torch.randn(2 * MIB)
    kept = values.clone()
    assert pages.release_file_pages([values]) == 0
    assert torch.equal(values, kept)


@linux
def test_only_whole_pages_inside_the_tensor_are_advised(mapped):
    # 3 pages starting half a page in: only the 2 whole pages inside are the tensor's alone.
    half_page = mmap.PAGESIZE // 2 // 4
    window = mapped[half_page : half_page + 3 * mmap.PAGESIZE // 4]
    assert pages.release_file_pages([window]) == 2 * mmap.PAGESIZE
    assert pages.release_file_pages([mapped[:10]]) == 0  # less than a page


def test_without_madvise_nothing_happens(monkeypatch, mapped):
    monkeypatch.setattr(pages, "_madvise", lambda: None)
    assert pages.release_file_pages([mapped]) == 0
