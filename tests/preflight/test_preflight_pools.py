"""Check 5: a non-empty pool for every stage, and an evaluation pool disjoint from training."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medrl.data import DatasetPools
from medrl.preflight import PreflightError, run_preflight


def with_pools(run, **changes) -> DatasetPools:
    """The run's pools with some replaced (as a pool changed after loading would be)."""
    return DatasetPools({**run.pools, **changes}, run.pools.summary)


def failures(run, pools, tokenizer, **kwargs) -> list:
    with pytest.raises(PreflightError) as caught:
        run_preflight(run.cfg, run.specs, pools, tokenizer=tokenizer, **kwargs)
    return caught.value.failures


def test_smoke_pools_are_filled_and_disjoint(preflight):
    pools = [r for r in preflight().results if r.name == "pools"]
    # 3 filled stage pools, eval against sft and grpo; the val pool filled and against all 3
    assert [r.status for r in pools] == ["pass"] * 9
    messages = [r.message for r in pools]
    assert "dataset.pools.eval is disjoint from dataset.pools.sft (ids and texts)" in messages
    assert "dataset.pools.val: 4 records for validation" in messages
    for other in ("eval", "sft", "grpo"):
        disjoint = f"dataset.pools.val is disjoint from dataset.pools.{other} (ids and texts)"
        assert disjoint in messages


def test_an_eval_pool_sharing_a_record_with_the_sft_pool_names_both_pools(smoke, qwen_tokenizer):
    run = smoke()
    leaked = run.pools["sft"][0]
    pools = with_pools(run, eval=[*run.pools["eval"], leaked])
    (failure,) = failures(run, pools, qwen_tokenizer)
    assert failure.key == "dataset.pools.eval"
    assert failure.message.startswith(
        "dataset.pools.eval overlaps dataset.pools.sft: 1 shared record ids, 1 shared question"
    )


def test_the_same_question_under_another_id_is_an_overlap_too(smoke, qwen_tokenizer):
    run = smoke()
    twin = replace(run.pools["grpo"][0], id="renamed", question=run.pools["grpo"][0].question + "?")
    pools = with_pools(run, eval=[*run.pools["eval"], twin])
    (failure,) = failures(run, pools, qwen_tokenizer)
    assert "dataset.pools.eval overlaps dataset.pools.grpo: 0 shared record ids, 1 shared" in (
        failure.message
    )


def test_an_empty_pool_fails_only_for_a_stage_that_reads_it(smoke, qwen_tokenizer):
    run = smoke()
    pools = with_pools(run, grpo=[])
    (failure,) = failures(run, pools, qwen_tokenizer)
    assert failure.key == "dataset.pools.grpo"
    assert "empty (0 records after selection, de-duplication and limit)" in failure.message
    report = run_preflight(
        run.cfg, run.specs, pools, tokenizer=qwen_tokenizer, stages=["sft", "eval"]
    )
    assert report.ok


def test_a_missing_pool_lists_the_pools_there_are(smoke, qwen_tokenizer):
    run = smoke()
    pools = DatasetPools({k: v for k, v in run.pools.items() if k != "sft"}, run.pools.summary)
    (failure,) = failures(run, pools, qwen_tokenizer)
    assert failure.message == (
        "dataset.pools.sft: missing; the sft stage reads it (pools: ['eval', 'grpo', 'val'])"
    )
