"""Wall-clock timing of named blocks into a plain dict (the time/* metrics of a step).

On CUDA the device is synchronized at both ends, so a block's time holds its own kernels rather
than those still queued from the block before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def timed(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the block's wall seconds to timings[name]; blocks of one name add up. None: no-op."""
    if timings is None:
        yield
        return
    _synchronize()
    start = time.perf_counter()
    try:
        yield
    finally:
        _synchronize()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
