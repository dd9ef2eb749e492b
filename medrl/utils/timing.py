"""Wall-clock timing of named blocks into a plain dict (the time/* metrics of a step)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the block's wall seconds to timings[name]; blocks of one name add up. None: no-op."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
