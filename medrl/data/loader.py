"""``load_pools``: a DatasetSpec in, its pools and a summary out.

The orchestration lives here, apart from pools.py, so the pool rules stay pure functions and
all reading happens in sources.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from medrl.data.normalize import get_normalizer
from medrl.data.pools import (
    finalize_pools,
    label_counts,
    pool_overlaps,
    record_id,
    record_text,
    select_pools,
    shuffle_records,
)
from medrl.data.records import QARecord
from medrl.data.sources import LoadedSplit, SourcePlan, load_split, read_ids_file, resolve_source
from medrl.data.spec import DatasetSpec
from medrl.data.summary import DatasetPools, DataSummary, PoolSummary, SplitSummary

log = logging.getLogger(__name__)


def load_pools(spec: DatasetSpec) -> DatasetPools:
    """Read ``spec``'s source, normalize it and cut its pools (rules in pools.py).

    Deterministic for a given spec and source data. Raises DataError when the data cannot be
    read or normalized (with the row's location), or when the pools do not fit their splits.
    """
    plan = resolve_source(spec)
    log.info("%s: reading from %s (%s)", spec.title, plan.source, plan.location)
    for note in plan.notes:
        log.warning("%s", note)
    ids = {
        name: read_ids_file(pool.ids_file)
        for name, pool in spec.pools.items()
        if pool.ids_file is not None
    }
    by_split = _pools_by_split(spec, plan)
    loaded = {split: load_split(spec, plan, split) for split in by_split}
    drawn: dict[str, list[QARecord]] = {}
    for split, names in by_split.items():
        rows = shuffle_records(loaded[split].records, spec.seed)
        drawn.update(select_pools(rows, {n: spec.pools[n] for n in names}, ids, split))
    drawn = {name: drawn[name] for name in spec.pools}
    limits = {name: pool.limit for name, pool in spec.pools.items()}
    final, removed = finalize_pools(drawn, spec.eval_pool, limits)
    summary = _summarize(spec, plan, list(loaded.values()), drawn, final, removed)
    return DatasetPools(final, summary)


def _pools_by_split(spec: DatasetSpec, plan: SourcePlan) -> dict[str, list[str]]:
    """Underlying split -> its pools in declaration order (pools sharing a split share a
    shuffle and are cut from it together, so they never overlap)."""
    groups: dict[str, list[str]] = {}
    for name, pool in spec.pools.items():
        groups.setdefault(plan.splits[pool.split], []).append(name)
    return groups


def _summarize(
    spec: DatasetSpec,
    plan: SourcePlan,
    loaded: Sequence[LoadedSplit],
    drawn: Mapping[str, Sequence[QARecord]],
    final: Mapping[str, Sequence[QARecord]],
    removed: Mapping[str, int],
) -> DataSummary:
    labels = get_normalizer(spec.name).labels
    splits = tuple(
        SplitSummary(
            split=split.split,
            location=split.location,
            rows=split.rows,
            records=len(split.valid),
            labels=label_counts(split.valid, labels),
            skipped=dict(split.skipped),
        )
        for split in loaded
    )
    pools = tuple(
        PoolSummary(
            name=name,
            split=pool.split,
            source_split=plan.splits[pool.split],
            selection=pool.describe(),
            drawn=len(drawn[name]),
            dedup_removed=removed[name],
            size=len(final[name]),
            labels=label_counts(final[name], labels),
        )
        for name, pool in spec.pools.items()
    )
    return DataSummary(
        dataset=spec.name,
        title=spec.title,
        source=plan.source,
        requested_source=str(spec.source),
        location=plan.location,
        seed=spec.seed,
        eval_pool=spec.eval_pool,
        labels=labels,
        splits=splits,
        pools=pools,
        notes=plan.notes,
        overlap_by_id=pool_overlaps(final, record_id),
        overlap_by_text=pool_overlaps(final, record_text),
    )
