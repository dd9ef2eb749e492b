"""Dataset mixtures (medrl/data/mixture.py): the ratio arithmetic by hand, the real MedMCQA +
MedQA mixture, and the removal of eval questions across the datasets of one run."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from medrl.data import DataError, DatasetPools, MixtureSpec, QARecord, load_dataset
from medrl.data.mixture import exclude_eval_questions, mix_pool, mixture_counts
from medrl.data.summary import DataSummary, PoolSummary

# ---- the arithmetic -------------------------------------------------------------------------


def test_equal_ratios_take_as_many_of_each_as_the_smaller_source_has():
    # N = min(100 / 0.5, 30 / 0.5) = 60 -> 30 of each
    assert mixture_counts({"a": 100, "b": 30}, {"a": 0.5, "b": 0.5}) == {"a": 30, "b": 30}


def test_unequal_ratios_fill_the_largest_pool_they_can_exactly():
    # N = min(100 / 0.75, 30 / 0.25) = min(133.3, 120) -> 120: 90 of a, 30 of b
    assert mixture_counts({"a": 100, "b": 30}, {"a": 0.75, "b": 0.25}) == {"a": 90, "b": 30}
    # N = min(300 / 0.8, 500 / 0.2) = 375: 300 of a, 75 of b
    assert mixture_counts({"a": 300, "b": 500}, {"a": 0.8, "b": 0.2}) == {"a": 300, "b": 75}


def test_an_empty_source_empties_the_mixed_pool():
    assert mixture_counts({"a": 100, "b": 0}, {"a": 0.5, "b": 0.5}) == {"a": 0, "b": 0}


def test_mix_pool_takes_each_sources_first_records_and_shuffles_them_with_the_seed():
    a = [_record(f"a{i}", "a") for i in range(5)]
    b = [_record(f"b{i}", "b") for i in range(5)]

    mixed = mix_pool({"a": a, "b": b}, {"a": 3, "b": 1}, seed=0)

    assert sorted(r.id for r in mixed) == ["a0", "a1", "a2", "b0"]
    assert [r.id for r in mix_pool({"a": a, "b": b}, {"a": 3, "b": 1}, seed=0)] == [
        r.id for r in mixed
    ]


# ---- the spec's checks ----------------------------------------------------------------------


def test_a_mixture_needs_two_sources_one_ratio_each_and_positive_ratios(compose):
    medmcqa, medqa = _specs(compose, "medmcqa", "medqa")
    with pytest.raises(DataError, match="a mixture needs two or more"):
        MixtureSpec(sources={"medmcqa": medmcqa}, ratios={"medmcqa": 1})
    with pytest.raises(DataError, match=r"dataset.ratios names \['medmcqa'\] but"):
        MixtureSpec(sources={"medmcqa": medmcqa, "medqa": medqa}, ratios={"medmcqa": 1})
    with pytest.raises(DataError, match=r"dataset.ratios must be positive, got \{'medqa': 0.0\}"):
        MixtureSpec(sources={"medmcqa": medmcqa, "medqa": medqa}, ratios={"medmcqa": 1, "medqa": 0})


def test_datasets_with_different_answer_labels_do_not_mix(compose):
    medmcqa, pubmedqa = _specs(compose, "medmcqa", "pubmedqa")
    with pytest.raises(DataError, match="one answer type"):
        MixtureSpec(
            sources={"medmcqa": medmcqa, "pubmedqa": pubmedqa}, ratios={"medmcqa": 1, "pubmedqa": 1}
        )


# ---- the real mixture -----------------------------------------------------------------------


def test_medmcqa_medqa_mixes_training_pools_by_ratio_and_keeps_both_eval_pools_whole(
    compose, shared_dir
):
    spec = instantiate(compose("train", ["dataset=medmcqa_medqa"]).dataset)

    pools = load_dataset(spec)

    summary = pools.summary
    # eval: MedMCQA's 500 and MedQA's 273 whole; sft: 300 of MedMCQA's 300 and 300 of MedQA's
    # 500; grpo: 400 of each (MedQA has 400), val: 100 of each (MedQA has 100)
    assert summary.pool("eval").sources == {"medmcqa": 500, "medqa": 273}
    assert {k: summary.pool("sft").sources[k] for k in ("medmcqa", "medqa")} == {
        "medmcqa": 300,
        "medqa": 300,
    }
    assert {k: summary.pool("grpo").sources[k] for k in ("medmcqa", "medqa")} == {
        "medmcqa": 400,
        "medqa": 400,
    }
    assert {k: summary.pool("val").sources[k] for k in ("medmcqa", "medqa")} == {
        "medmcqa": 100,
        "medqa": 100,
    }
    assert summary.max_overlap == 0
    assert spec.name == "mixture(medmcqa,medqa)" and spec.title == "MedMCQA 50% + MedQA 50%"
    assert {r.source for r in pools["sft"][:50]} == {"medmcqa", "medqa"}, "shuffled together"


def test_ratios_from_config_change_the_mix(compose, shared_dir):
    overrides = ["dataset=medmcqa_medqa", "dataset.ratios.medmcqa=3", "dataset.ratios.medqa=1"]
    spec = instantiate(compose("train", overrides).dataset)

    pools = load_dataset(spec)

    # sft: N = min(300 / 0.75, 500 / 0.25) = 400 -> 300 MedMCQA + 100 MedQA
    assert pools.summary.pool("sft").sources == {"medmcqa": 300, "medqa": 100}


# ---- eval questions across the datasets of a run ----------------------------------------------


def test_training_questions_held_by_another_datasets_eval_pool_are_dropped_and_counted():
    first = _pools("first", eval_questions=["What causes scurvy?"], train=["Q one", "Q two"])
    second = _pools("second", eval_questions=["Q  ONE"], train=["what causes SCURVY?", "Q three"])

    first_kept, second_kept = exclude_eval_questions([first, second])

    assert [r.question for r in first_kept["sft"]] == ["Q two"]
    assert [r.question for r in second_kept["sft"]] == ["Q three"]
    assert [r.question for r in second_kept["eval"]] == ["Q  ONE"], "eval pools stay whole"
    assert first_kept.summary.pool("sft").dedup_removed == 1
    assert first_kept.summary.pool("sft").size == 1
    assert "another dataset's eval pool, dropped: sft 1" in first_kept.summary.notes[-1]


def test_datasets_without_shared_questions_come_back_unchanged():
    first = _pools("first", eval_questions=["A?"], train=["B?"])
    second = _pools("second", eval_questions=["C?"], train=["D?"])

    assert exclude_eval_questions([first, second]) == [first, second]


# ---- helpers --------------------------------------------------------------------------------


def _specs(compose, *names):
    return [instantiate(compose("train", [f"dataset={name}"]).dataset) for name in names]


def _record(record_id: str, source: str, question: str | None = None) -> QARecord:
    return QARecord(
        id=record_id,
        question=question or f"question {record_id}?",
        options={"A": "x", "B": "y"},
        answer="A",
        source=source,
    )


def _pools(name: str, eval_questions: list[str], train: list[str]) -> DatasetPools:
    records = {
        "eval": [_record(f"{name}-e{i}", name, q) for i, q in enumerate(eval_questions)],
        "sft": [_record(f"{name}-t{i}", name, q) for i, q in enumerate(train)],
    }
    pools = tuple(
        PoolSummary(pool, "train", "train", "rest", len(rs), 0, len(rs), {"A": len(rs), "B": 0})
        for pool, rs in records.items()
    )
    summary = DataSummary(
        dataset=name,
        title=name,
        source="local",
        requested_source="local",
        location="memory",
        seed=0,
        eval_pool="eval",
        labels=("A", "B"),
        splits=(),
        pools=pools,
        notes=(),
        overlap_by_id={},
        overlap_by_text={},
    )
    return DatasetPools(records, summary)
