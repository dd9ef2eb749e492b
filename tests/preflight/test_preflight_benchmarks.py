"""Preflight of several benchmarks: no benchmark scores a question the evaluated models
trained on (fail when the trained-on pool is known exactly, warn when it was rebuilt without
confirmation), and a manifest's recorded pools are recognized in rebuilt ones."""

from __future__ import annotations

from medrl.checkpoints.hashing import ids_hash
from medrl.data.records import QARecord
from medrl.preflight.benchmarks import (
    TrainedOn,
    disjoint_checks,
    recorded_pools_found,
    shared_questions,
)

KEY = "evaluation.benchmarks"


def record(id: str, question: str, source: str = "medqa") -> QARecord:
    return QARecord(
        id=id, question=question, options={"A": "a", "B": "b"}, answer="A", source=source
    )


MEDQA = [record("1", "What causes scurvy?"), record("2", "Which nerve is cut?")]
PUBMEDQA = [record("1", "Does aspirin help?", source="pubmedqa")]


def test_ids_are_compared_within_a_dataset_and_questions_by_normalized_text():
    same_text = [record("9", "what causes  SCURVY?", source="medmcqa")]
    assert shared_questions(MEDQA, same_text) == (0, 1)
    assert shared_questions(MEDQA, PUBMEDQA) == (0, 0), "id 1 of PubMedQA is not id 1 of MedQA"
    assert shared_questions(MEDQA, [record("2", "another question")]) == (1, 0)


def test_benchmarks_disjoint_from_every_trained_pool_pass_naming_them():
    trained = [TrainedOn("MedMCQA pool sft (stage sft)", [record("x", "Unrelated?", "medmcqa")])]
    results = disjoint_checks({"medqa": MEDQA, "pubmedqa": PUBMEDQA}, trained)
    assert [(r.status, r.key) for r in results] == [("pass", KEY), ("pass", KEY)]
    assert results[0].message == (
        "evaluation.benchmarks: medqa's 2 scored items share no question (ids, texts) with 1 "
        "trained-on pools: MedMCQA pool sft (stage sft)"
    )


def test_a_benchmark_sharing_a_question_with_a_known_training_pool_fails():
    trained = [TrainedOn("sft (run/checkpoints/sft) MedQA pool sft", [MEDQA[1]])]
    passed, failed = disjoint_checks({"pubmedqa": PUBMEDQA, "medqa": MEDQA}, trained)
    assert passed.status == "pass"
    assert failed.status == "fail" and failed.key == KEY
    assert "medqa's scored items share questions with what the evaluated models trained on" in (
        failed.message
    )
    assert "MedQA pool sft: 1 ids, 1 texts" in failed.message


def test_an_overlap_with_a_pool_rebuilt_without_confirmation_only_warns():
    trained = [TrainedOn("rebuilt", [MEDQA[0]], verified=False)]
    (result,) = disjoint_checks({"medqa": MEDQA}, trained)
    assert result.status == "warn" and "differ from the manifest" in result.message


def test_with_no_known_training_pool_the_check_says_it_was_skipped():
    (result,) = disjoint_checks({"medqa": MEDQA}, [])
    assert result.status == "skip" and "only a base model" in result.message


def test_recorded_pools_are_found_as_the_head_or_tail_of_a_rebuilt_pool():
    pool = [record(str(i), f"question {i}") for i in range(5)]

    def entry(records):
        return {"count": len(records), "ids_hash": ids_hash(r.id for r in records)}

    sft = {"sft_train": entry(pool[:4]), "sft_val": entry(pool[4:])}
    assert recorded_pools_found(sft, {"sft": pool, "val": pool[:1]})
    assert recorded_pools_found({"grpo": entry(pool)}, {"sft": [], "grpo": pool})
    assert not recorded_pools_found({"grpo": entry(pool[1:3])}, {"grpo": pool}), "a middle slice"
    assert not recorded_pools_found({"grpo": entry(pool)}, {"grpo": pool[:4]}), "a pool shrank"
    assert not recorded_pools_found({}, {"grpo": pool}), "nothing recorded, nothing confirmed"
