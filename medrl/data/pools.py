"""Pure pool arithmetic: seeded shuffle, selection, de-duplication, limits, overlap, labels.

No I/O and no config objects beyond the frozen ``PoolSpec``: records and ids go in, pools and
counts come out, so every rule is testable on a handful of hand-written records.

Rules (``load_pools`` applies them in this order):
1. Per underlying split, one seeded shuffle of its row positions (``shuffle_records``).
2. ``select_pools``: ``ids_file`` pools claim their rows first; then the other pools of the
   split, in declaration order, take ``range`` positions or the next ``size`` unclaimed rows
   (``size: null`` = every unclaimed row). No row is claimed twice.
3. ``finalize_pools``: the eval pool is kept as drawn (then limited); every other pool, in
   declaration order, drops records whose normalized question text is in the eval pool or in
   an earlier pool, then keeps its first ``limit`` records.
4. ``pool_overlaps``: the pairwise check, recomputed from the final pools alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations

from medrl.data.errors import DataError
from medrl.data.records import QARecord, normalize_question_text
from medrl.data.spec import PoolSpec


def shuffled_order(n: int, seed: int) -> list[int]:
    """A permutation of ``range(n)`` from ``random.Random(seed)``.

    Python's Mersenne Twister and ``shuffle`` are specified and platform-independent for an
    int seed, so the same seed gives the same pools on every machine and Python >= 3.2.
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def shuffle_records(records: Sequence[QARecord | None], seed: int) -> list[QARecord]:
    """The split's records in seeded order; ``None`` (skipped rows) dropped after shuffling.

    Shuffling row positions before dropping skipped rows keeps every other row's relative order
    unchanged when one row is skipped.
    """
    shuffled = (records[i] for i in shuffled_order(len(records), seed))
    return [record for record in shuffled if record is not None]


def select_pools(
    rows: Sequence[QARecord],
    pools: Mapping[str, PoolSpec],
    ids: Mapping[str, Sequence[str]],
    split: str,
) -> dict[str, list[QARecord]]:
    """Cut the pools of one underlying split from its shuffled ``rows``.

    pools: the pools on this split, in declaration order. ids: pool name -> its ids (for the
    ``ids_file`` pools). split: the split's name for messages. Returns pool name -> records in
    shuffled order, disjoint by position. Raises DataError when a pool asks for more rows than
    remain, a range reaches past the split or into claimed rows, or listed ids are missing.
    """
    owner: list[str | None] = [None] * len(rows)
    drawn: dict[str, list[int]] = {}
    ordered = [n for n, p in pools.items() if p.ids_file is not None]
    ordered += [n for n, p in pools.items() if p.ids_file is None]
    for name in ordered:
        pool = pools[name]
        if pool.ids_file is not None:
            positions = _positions_of_ids(rows, ids[name], name, split)
        elif pool.range is not None:
            positions = _positions_of_range(len(rows), pool.range, name, split)
        else:
            positions = _next_unclaimed(owner, pool.size, name, split)
        _claim(owner, positions, name, split)
        drawn[name] = sorted(positions)
    return {name: [rows[i] for i in drawn[name]] for name in pools}


def _positions_of_ids(
    rows: Sequence[QARecord], wanted: Sequence[str], pool: str, split: str
) -> list[int]:
    position = {record.id: i for i, record in enumerate(rows)}
    missing = [record_id for record_id in wanted if record_id not in position]
    if missing:
        raise DataError(
            f"pool {pool!r}: {len(missing)} of the {len(wanted)} ids in its ids_file are not in "
            f"split {split!r} (e.g. {missing[:5]}); check the ids file and the split"
        )
    return [position[record_id] for record_id in wanted]


def _positions_of_range(n: int, bounds: tuple[int, int], pool: str, split: str) -> list[int]:
    start, stop = bounds
    if stop > n:
        raise DataError(
            f"pool {pool!r} asks for range {start}:{stop} of split {split!r}, which has {n} rows"
        )
    return list(range(start, stop))


def _next_unclaimed(
    owner: Sequence[str | None], size: int | None, pool: str, split: str
) -> list[int]:
    free = [i for i, taken_by in enumerate(owner) if taken_by is None]
    if size is None:
        if not free:
            raise DataError(
                f"pool {pool!r} takes the rest of split {split!r}, but earlier pools "
                f"({_owners(owner)}) took all {len(owner)} rows"
            )
        return free
    if size > len(free):
        raise DataError(
            f"pool {pool!r} asks for {size} rows of split {split!r}, but only {len(free)} of its "
            f"{len(owner)} rows remain after earlier pools ({_owners(owner) or 'none'}); lower "
            f"its size or the sizes of the pools declared before it"
        )
    return free[:size]


def _claim(owner: list[str | None], positions: Iterable[int], pool: str, split: str) -> None:
    for i in positions:
        if owner[i] is not None:
            raise DataError(
                f"pool {pool!r} overlaps pool {owner[i]!r} in split {split!r} (position {i}); "
                f"pools of one split must be disjoint"
            )
        owner[i] = pool


def _owners(owner: Sequence[str | None]) -> str:
    counts: dict[str, int] = {}
    for name in owner:
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def finalize_pools(
    drawn: Mapping[str, Sequence[QARecord]],
    eval_pool: str | None,
    limits: Mapping[str, int | None],
) -> tuple[dict[str, list[QARecord]], dict[str, int]]:
    """De-duplicate against the eval pool and earlier pools, then apply each pool's limit.

    drawn: pool name -> records, in declaration order. Returns (pools in declaration order,
    pool name -> records removed as duplicates). The eval pool is finalized first whatever its
    position, because every other pool is compared with its final contents; a limited eval pool
    therefore only excludes the questions that are really evaluated.
    """
    order = ([eval_pool] if eval_pool is not None else []) + [n for n in drawn if n != eval_pool]
    seen: set[str] = set()
    final: dict[str, list[QARecord]] = {}
    removed: dict[str, int] = {}
    for name in order:
        records = list(drawn[name])
        if name != eval_pool:
            kept = [r for r in records if normalize_question_text(r.question) not in seen]
            removed[name] = len(records) - len(kept)
            records = kept
        else:
            removed[name] = 0
        limit = limits.get(name)
        final[name] = records if limit is None else records[:limit]
        seen.update(normalize_question_text(r.question) for r in final[name])
    return {name: final[name] for name in drawn}, {name: removed[name] for name in drawn}


def pool_overlaps(
    pools: Mapping[str, Sequence[QARecord]], key: Callable[[QARecord], str]
) -> dict[tuple[str, str], int]:
    """For every pair of pools (in declaration order), how many distinct keys they share.

    Recomputed from the final pools only, independent of how they were built, so it checks the
    construction rather than restating it.
    """
    keys = {name: {key(record) for record in records} for name, records in pools.items()}
    return {(a, b): len(keys[a] & keys[b]) for a, b in combinations(pools, 2)}


def record_id(record: QARecord) -> str:
    """Overlap key: the record id."""
    return record.id


def record_text(record: QARecord) -> str:
    """Overlap key: the normalized question text (what de-duplication compares)."""
    return normalize_question_text(record.question)


def label_counts(records: Iterable[QARecord], labels: Sequence[str]) -> dict[str, int]:
    """Records per answer label, in ``labels`` order (zeros included)."""
    counts = dict.fromkeys(labels, 0)
    for record in records:
        if not record.open_ended:  # an open-ended question has no label to count
            counts[record.answer] = counts.get(record.answer, 0) + 1
    return counts
