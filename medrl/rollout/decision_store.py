"""Kernel decisions kept per machine kind, so every run on one kind of CPU computes alike.

The engine's `auto` choices (medrl.rollout.kernel_choice for Linears, medrl.rollout.
decode_attention for half-precision decode attention) time the candidates on the run's shapes.
Timings near a tie can come out either way from one process to the next, and the kernels
round differently: a run killed and resumed (a new process) could then continue with other
kernels than the uninterrupted run and end with other weights. So a decision is timed once per
machine kind and stored; later processes on that kind read it instead of timing again.

The store is one JSON file per CPU kind (a digest of /proc/cpuinfo's identity and flags) under
`<cache dir>/kernel_choices/`, the cache dir being $MEDRL_CACHE_DIR or ~/.cache/medrl, as
conf/paths/default.yaml's cache_dir. Keys name the decision's inputs and torch's version;
writes are atomic (a temporary file renamed), and a file that cannot be read or written only
means timing again (logged), never a failed run. Delete the folder to time again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

Decision = TypeVar("Decision")


def machine_kind(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """A file name for this kind of CPU: a digest of its first block's vendor, family, model,
    model name and flags (the same CPU kind gives the same name); "unknown" elsewhere."""
    try:
        first = cpuinfo.read_text().split("\n\n")[0]
    except OSError:
        return "unknown"
    wanted = ("vendor_id", "cpu family", "model", "model name", "flags")
    fields = [line for line in first.splitlines() if line.split(":")[0].strip() in wanted]
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()[:16]


def default_store_path() -> Path:
    """<cache dir>/kernel_choices/<cpu kind>.json (the cache dir of conf/paths/default.yaml)."""
    cache = os.environ.get("MEDRL_CACHE_DIR") or str(Path.home() / ".cache" / "medrl")
    return Path(cache) / "kernel_choices" / f"{machine_kind()}.json"


class DecisionStore:
    """Decisions by key (a string naming their inputs), read from and written to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def key(self, *parts: Any) -> str:
        return repr((*parts, torch.__version__))

    def get(self, key: str) -> Any | None:
        return self._read().get(key)

    def put(self, key: str, value: Any) -> None:
        entries = self._read()
        entries[key] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
            temporary.replace(self.path)
        except OSError as error:
            log.warning("kernel decision not stored in %s: %s", self.path, error)

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("kernel decisions in %s unreadable (%s): timing again", self.path, error)
            return {}


def stored_or_measured(
    parts: tuple,
    measure: Callable[[], Decision],
    encode: Callable[[Decision], Any],
    decode: Callable[[Any], Decision],
) -> Decision:
    """The decision named by `parts` from this machine kind's store (decoded), or else
    `measure()`, stored (encoded) for the next process: the one path of every `auto` chooser."""
    store = DecisionStore(default_store_path())
    key = store.key(*parts)
    stored = store.get(key)
    if stored is not None:
        return decode(stored)
    decision = measure()
    store.put(key, encode(decision))
    return decision
