"""release_free_heap hands free pages back where the C library can, and GRPO calls it per
micro-batch only when engine.release_heap asks."""

from __future__ import annotations

import sys

import pytest

from medrl.utils import heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_heap_trims_on_linux():
    assert heap.release_free_heap() is True


def test_without_malloc_trim_nothing_happens(monkeypatch):
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)
    assert heap.release_free_heap() is False
