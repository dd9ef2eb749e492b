"""Pool checks (check 5): every stage has records, and evaluation never scores a trained-on item.

The data layer already guarantees disjoint pools when it builds them; this recomputes the
overlaps with its own `pool_overlaps` on the pools the run actually holds, so a pool changed
after loading (or a data-layer regression) is caught before training rather than after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medrl.data.pools import pool_overlaps, record_id, record_text
from medrl.data.records import QARecord
from medrl.preflight.report import CheckResult, failed, passed
from medrl.stages.evaluate import POOL as EVAL_POOL
from medrl.stages.grpo import POOL as GRPO_POOL
from medrl.stages.sft import POOL as SFT_POOL

# Stage -> the pool its runner reads.
STAGE_POOLS: dict[str, str] = {"sft": SFT_POOL, "grpo": GRPO_POOL, "eval": EVAL_POOL}
TRAIN_POOLS = (SFT_POOL, GRPO_POOL)


def pools_in_use(stages: Sequence[str]) -> list[str]:
    """The pools the stages read, each once, in stage order."""
    return list(dict.fromkeys(STAGE_POOLS[stage] for stage in stages))


def pool_key(name: str) -> str:
    return f"dataset.pools.{name}"


def pool_checks(
    pools: Mapping[str, Sequence[QARecord]], stages: Sequence[str]
) -> list[CheckResult]:
    """A non-empty pool for every stage, then the evaluation pool's disjointness."""
    results = [check_pool_filled(pools, stage) for stage in stages]
    if "eval" in stages and EVAL_POOL in pools:
        results += [
            check_disjoint(pools, EVAL_POOL, other) for other in TRAIN_POOLS if other in pools
        ]
    return results


def validation_pool_checks(
    pools: Mapping[str, Sequence[QARecord]],
    stages: Sequence[str],
    validation: Mapping[str, object] | None,
    eval_pool: str | None = EVAL_POOL,
) -> list[CheckResult]:
    """When a training stage validates (validation.every > 0): its pool (validation.pool) is
    filled, is not the evaluation pool, and shares no id or question text with the evaluation
    and training pools (checkpoint selection must not read the items evaluation scores, and
    validating on trained-on items would only measure memorization)."""
    if validation is None or not any(stage in TRAIN_POOLS for stage in stages):
        return []
    every, name = validation.get("every"), validation.get("pool")
    if not isinstance(every, int) or every <= 0 or not isinstance(name, str):
        return []  # off, or a bad value the training block's check reports
    key = pool_key(name)
    if name == eval_pool:
        message = (
            f"validation.pool={name!r} is the evaluation pool; checkpoint selection would read "
            "the items evaluation scores: set validation.pool=val (a training-side pool)"
        )
        return [failed("pools", message, "validation.pool")]
    if name not in pools:
        message = (
            f"validation.pool={name!r}: the dataset has no such pool (pools: {list(pools)}); "
            f"declare {key} or set validation.every=0"
        )
        return [failed("pools", message, "validation.pool")]
    if not pools[name]:
        message = f"{key}: empty; validation needs at least one record (or validation.every=0)"
        return [failed("pools", message, key)]
    results = [passed("pools", f"{key}: {len(pools[name])} records for validation", key)]
    others = [eval_pool, *TRAIN_POOLS]
    return results + [check_disjoint(pools, name, o) for o in others if o in pools and o != name]


def check_pool_filled(pools: Mapping[str, Sequence[QARecord]], stage: str) -> CheckResult:
    name = STAGE_POOLS[stage]
    key = pool_key(name)
    if name not in pools:
        return failed(
            "pools", f"{key}: missing; the {stage} stage reads it (pools: {list(pools)})", key
        )
    size = len(pools[name])
    if size == 0:
        return failed(
            "pools",
            f"{key}: empty (0 records after selection, de-duplication and limit); the {stage} "
            "stage needs at least one",
            key,
        )
    return passed("pools", f"{key}: {size} records for the {stage} stage", key)


def check_disjoint(pools: Mapping[str, Sequence[QARecord]], name: str, other: str) -> CheckResult:
    """`name` and `other` share no record id and no normalized question text."""
    pair = {name: pools[name], other: pools[other]}
    by_id = pool_overlaps(pair, record_id)[(name, other)]
    by_text = pool_overlaps(pair, record_text)[(name, other)]
    key = pool_key(name)
    if by_id == 0 and by_text == 0:
        return passed("pools", f"{key} is disjoint from {pool_key(other)} (ids and texts)", key)
    return failed(
        "pools",
        f"{key} overlaps {pool_key(other)}: {by_id} shared record ids, {by_text} shared "
        "question texts; evaluation or validation would score questions the model trained on, "
        "or selection would read evaluated items (give the pools disjoint rows: their split, "
        "size, range or ids_file)",
        key,
    )


def check_references(
    pools: Mapping[str, Sequence[QARecord]], stages: Sequence[str], format_name: str
) -> list[CheckResult]:
    """Open-ended formats: every record of every pool in use has a reference answer (its
    explanation) to train towards and score against; one result per pool."""
    results = []
    for name in pools_in_use(stages):
        records = pools.get(name, ())
        missing = [r.id for r in records if not (r.explanation or "").strip()]
        if not missing:
            message = f"{pool_key(name)}: all {len(records)} records have a reference answer"
            results.append(passed("references", message, "format"))
            continue
        message = (
            f"format={format_name} needs a reference answer per record, and {len(missing)} of "
            f"the {len(records)} records of {pool_key(name)} have none (first: {missing[0]!r}). "
            "Use a dataset with references (dataset=pubmedqa: long_answer; MedMCQA's `exp` "
            "from the hub: dataset.source=hub) or a closed format (format=xml)"
        )
        results.append(failed("references", message, "format"))
    return results


def check_labels(
    pools: Mapping[str, Sequence[QARecord]], stages: Sequence[str], format_name: str
) -> list[CheckResult]:
    """Closed formats: every record of every pool in use has answer labels (an open-ended
    dataset such as BioASQ has only reference texts); one result per pool."""
    results = []
    for name in pools_in_use(stages):
        records = pools.get(name, ())
        open_ended = [r.id for r in records if r.open_ended]
        if not open_ended:
            continue
        message = (
            f"format={format_name} answers with a label, and {len(open_ended)} of the "
            f"{len(records)} records of {pool_key(name)} are open-ended questions without labels "
            f"(first: {open_ended[0]!r}); use format=free_text with this dataset"
        )
        results.append(failed("labels", message, "format"))
    return results
