"""Kernel decisions kept per machine kind, so every run on one kind of CPU computes alike.

The engine's `auto` choices (medrl.rollout.kernel_choice for Linears, medrl.rollout.
decode_attention for half-precision decode attention) time the candidates on the run's shapes.
Timings near a tie can come out either way from one process to the next, and the kernels
round differently: a run killed and resumed (a new process) could then continue with other
kernels than the uninterrupted run and end with other weights. So a decision is timed once per
machine kind and stored; later processes on that kind read it instead of timing again.

The store is one JSON file per CPU kind (medrl.bench.environment.cpu_kind's slug) under
`<cache dir>/kernel_choices/`, the cache dir being $MEDRL_CACHE_DIR or ~/.cache/medrl, as
conf/paths/default.yaml's cache_dir. Keys name the decision's inputs and torch's version;
writes are atomic (a temporary file renamed), and a file that cannot be read or written only
means timing again (logged), never a failed run. Delete the folder to time again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def default_store_path() -> Path:
    """<cache dir>/kernel_choices/<cpu kind>.json (the cache dir of conf/paths/default.yaml)."""
    from medrl.bench.environment import cpu_kind

    cache = os.environ.get("MEDRL_CACHE_DIR") or str(Path.home() / ".cache" / "medrl")
    return Path(cache) / "kernel_choices" / f"{cpu_kind().slug}.json"


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
