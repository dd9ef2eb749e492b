"""The judge cache: every verdict a run received, in its run folder, so a resumed run (or a
second reward over the same completion) replays it instead of asking again.

One JSON line per verdict, appended and flushed as verdicts arrive, so a crash loses at most
the batch in flight. Failures are cached too: a resumed run must see the same rewards as the
uninterrupted one would have, and that one scored the failure.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from medrl.data.records import QARecord
from medrl.rewards.judge.rubrics import Rubric


def cache_key(model: str, rubric: Rubric, record: QARecord, answer: str) -> str:
    """sha256 over the judge model, the rubric (name and version) and everything it is shown:
    question, context, reference, answer. A rubric edit without a version bump is not seen."""
    fields = [
        model,
        rubric.name,
        rubric.version,
        record.question,
        record.context if "context" in rubric.needs else None,
        record.explanation if "reference" in rubric.needs else None,
        answer,
    ]
    return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()


class JudgeCache:
    """key -> {"score": float | None, "reply": str | None, "failure": str | None}; `path`
    None keeps it in memory only (tests, evaluation without a run folder).

    Under several processes (trainer=ddp) each one judges its own completions: process
    `rank` > 0 appends to its own file beside `path` (cache.rank1.jsonl, ...), so no two
    processes write one file, and every process reads them all.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, rank: int = 0) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None and rank > 0:
            self.path = self.path.with_name(f"{self.path.stem}.rank{rank}{self.path.suffix}")
        self._entries: dict[str, dict] = {}
        for file in _cache_files(Path(path)) if path is not None else []:
            self._read(file)

    def _read(self, file: Path) -> None:
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():  # a torn last line (crash mid-write) is dropped below
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self._entries[entry["key"]] = entry["verdict"]

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put_many(self, items: list[tuple[str, dict]]) -> None:
        """Store verdicts, appending them to the file in one write."""
        for key, verdict in items:
            self._entries[key] = verdict
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"key": k, "verdict": v}) + "\n" for k, v in items)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())


def _cache_files(path: Path) -> list[Path]:
    """The cache file and the other processes' files beside it, those that exist."""
    others = sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))
    return [file for file in [path, *others] if file.is_file()]
