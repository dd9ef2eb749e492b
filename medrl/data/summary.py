"""What ``load_pools`` returns: the pools, and a summary of how they were made.

The summary is plain data (no I/O, no rich): the CLI prints it, training runs can log it, and
tests assert on it. Label distributions are always in the dataset's label order, zeros included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from medrl.data.records import QARecord


@dataclass(frozen=True)
class SplitSummary:
    """One underlying split as read.

    rows: rows in the source (bad ones included); records: rows that normalized;
    labels: label distribution of those records; skipped: skipped bad rows by kind.
    """

    split: str
    location: str
    rows: int
    records: int
    labels: Mapping[str, int]
    skipped: Mapping[str, int]


@dataclass(frozen=True)
class PoolSummary:
    """One pool: how it was selected and what it holds.

    split: the split the pool asks for; source_split: the split it was cut from (differs when a
    local split alias is used); selection: ``PoolSpec.describe()``; drawn: rows selected before
    de-duplication; dedup_removed: duplicates of the eval pool or of earlier pools dropped;
    size: records in the final pool (after the limit); labels: their label distribution;
    sources: records per source dataset, for a mixture (medrl.data.mixture; empty otherwise).
    """

    name: str
    split: str
    source_split: str
    selection: str
    drawn: int
    dedup_removed: int
    size: int
    labels: Mapping[str, int]
    sources: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSummary:
    """How a dataset's pools were built, and the independent overlap check.

    source: ``local`` | ``hub`` (resolved); requested_source: the configured value (``auto``...);
    location: the local folder or hub id; notes: split aliases used and source fallbacks;
    overlap_by_id / overlap_by_text: (pool a, pool b) -> shared ids / normalized question texts,
    for every pair of pools in declaration order (all 0 when the pools are sound).
    """

    dataset: str
    title: str
    source: str
    requested_source: str
    location: str
    seed: int
    eval_pool: str | None
    labels: tuple[str, ...]
    splits: tuple[SplitSummary, ...]
    pools: tuple[PoolSummary, ...]
    notes: tuple[str, ...]
    overlap_by_id: Mapping[tuple[str, str], int]
    overlap_by_text: Mapping[tuple[str, str], int]

    @property
    def skipped(self) -> dict[str, int]:
        """Skipped bad rows by kind, over all splits."""
        total: Counter[str] = Counter()
        for split in self.splits:
            total.update(split.skipped)
        return dict(total)

    @property
    def dedup_removed(self) -> int:
        """Records dropped as duplicates, over all pools."""
        return sum(pool.dedup_removed for pool in self.pools)

    @property
    def max_overlap(self) -> int:
        """The largest pairwise overlap by id or text; must be 0."""
        values = [*self.overlap_by_id.values(), *self.overlap_by_text.values()]
        return max(values, default=0)

    def split(self, name: str) -> SplitSummary:
        """The summary of underlying split ``name``; KeyError lists the splits read."""
        for split in self.splits:
            if split.split == name:
                return split
        raise KeyError(f"split {name!r} was not read; read: {[s.split for s in self.splits]}")

    def pool(self, name: str) -> PoolSummary:
        """The summary of pool ``name``; KeyError lists the pools."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(f"no pool {name!r}; pools: {[p.name for p in self.pools]}")


class DatasetPools(Mapping[str, list[QARecord]]):
    """Pool name -> records (declaration order), plus ``summary``.

    A read-only mapping: ``pools["sft"]``, ``list(pools)``, ``len(pools)``; ``eval_pool`` names
    the pool every other pool was de-duplicated against (None when there is none).
    """

    def __init__(self, pools: Mapping[str, list[QARecord]], summary: DataSummary) -> None:
        self._pools = dict(pools)
        self.summary = summary

    def __getitem__(self, name: str) -> list[QARecord]:
        if name not in self._pools:
            raise KeyError(f"no pool {name!r}; pools: {list(self._pools)}")
        return self._pools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(records)}" for name, records in self._pools.items())
        return f"DatasetPools({self.summary.title} from {self.summary.source}: {sizes})"

    @property
    def eval_pool(self) -> str | None:
        return self.summary.eval_pool
