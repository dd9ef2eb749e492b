"""The C library's functions through ctypes, for the few memory calls Python does not expose
(medrl.utils.heap's malloc_trim, medrl.utils.pages's madvise)."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any


def c_function(name: str) -> Any | None:
    """The C library's function `name` (errno kept for ctypes.get_errno), or None where there
    is no C library to load or it lacks the function (e.g. malloc_trim outside glibc)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library, use_errno=True), name)
    except (OSError, AttributeError):
        return None
