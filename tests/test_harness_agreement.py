"""medrl's forced choice against lm-evaluation-harness (medrl/harness_agreement.py): the
comparison on hand-made scores, the task written for lm-eval, and the real thing on the tiny
Qwen3 (skipped when lm_eval is not installed: `pip install -e ".[harness]"`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrl.data.records import QARecord
from medrl.evaluation import Prediction
from medrl.evaluation.choice import ChoiceSettings
from medrl.harness_agreement import HarnessItem, compare, harness_documents, task_config


def prediction(id: str, loglik: dict[str, float], lengths: dict[str, int], gold: str) -> Prediction:
    raw = max(loglik, key=loglik.get)
    norm = max(loglik, key=lambda k: loglik[k] / lengths[k])
    return Prediction(
        id=id,
        prompt="p",
        completion=raw,
        answer=raw,
        gold=gold,
        correct=raw == gold,
        format_ok=True,
        json_valid=False,
        schema_ok=False,
        num_tokens=1,
        truncated=False,
        option_logprobs=loglik,
        option_lengths=lengths,
        answer_norm=norm,
        correct_norm=norm == gold,
    )


LENGTHS = {"yes": 3, "no": 2, "maybe": 5}


def test_identical_scores_agree_on_every_item():
    ours = prediction("a", {"yes": -2.0, "no": -3.0, "maybe": -2.5}, LENGTHS, "maybe")
    theirs = HarnessItem("a", [-2.0, -3.0, -2.5], acc=0.0, acc_norm=1.0)  # yes raw, maybe norm
    agreement = compare([ours], [theirs], "acc_norm", tolerance=1e-4)
    assert (agreement.same_raw, agreement.same_norm, agreement.max_abs_diff) == (1, 1, 0.0)
    assert (agreement.medrl_accuracy, agreement.harness_acc_norm) == (0.0, 1.0)
    assert agreement.differing == []


def test_a_different_choice_is_counted_and_listed_with_both_scores():
    ours = prediction("a", {"yes": -2.0, "no": -3.0, "maybe": -2.5}, LENGTHS, "no")
    # lm-eval's "no" at -1.0: its raw choice and its per-character choice (-0.5) become "no".
    theirs = HarnessItem("a", [-2.0, -1.0, -2.5], acc=1.0, acc_norm=1.0)
    agreement = compare([ours], [theirs], "acc_norm", tolerance=1e-4)
    assert (agreement.same_raw, agreement.same_norm, agreement.max_abs_diff) == (0, 0, 2.0)
    [item] = agreement.differing
    assert (item["medrl"], item["harness"]) == (["yes", "maybe"], ["no", "no"])


def test_logged_accuracies_that_do_not_follow_from_the_scores_are_an_error():
    ours = prediction("a", {"yes": -2.0, "no": -3.0, "maybe": -2.5}, LENGTHS, "yes")
    with pytest.raises(ValueError, match="item a: lm-eval's logged acc / acc_norm"):
        compare([ours], [HarnessItem("a", [-2.0, -3.0, -2.5], 0.0, 0.0)], "acc_norm", 1e-4)
    with pytest.raises(ValueError, match="different items"):
        compare([ours], [HarnessItem("b", [-2.0, -3.0, -2.5], 1.0, 0.0)], "acc_norm", 1e-4)


def test_the_task_reads_medrls_prompts_and_continuations_from_a_local_file(tmp_path):
    record = QARecord(id="r", question="?", options={"A": "x", "B": "yy"}, answer="B")
    settings = ChoiceSettings(continuation="option_text", delimiter=" ")
    [document] = harness_documents([record], ["PROMPT\n"], settings)
    assert document == {
        "id": "r",
        "prompt": "PROMPT\n",
        "labels": ["A", "B"],
        "choices": ["x", "yy"],  # lm-eval adds the delimiter itself
        "gold": 1,
    }
    config = task_config("t", tmp_path / "items.jsonl", tmp_path / "cache", settings.delimiter)
    assert config["output_type"] == "multiple_choice" and config["target_delimiter"] == " "
    assert (config["doc_to_text"], config["doc_to_choice"], config["doc_to_target"]) == (
        "prompt",
        "choices",
        "gold",
    )
    assert config["dataset_kwargs"]["data_files"] == {"test": str(tmp_path / "items.jsonl")}


@pytest.mark.parametrize(
    "overrides",
    [
        ["dataset=pubmedqa"],  # labels of 3, 2 and 5 characters: acc_norm is not acc
        [
            "dataset=medqa",
            "format=xml",
            "evaluation.choice.continuation=option_text",
            "evaluation.choice.delimiter=' '",
            "evaluation.choice.length_unit=bytes",
        ],
    ],
    ids=["pubmedqa-label", "medqa-option-text"],
)
def test_medrl_agrees_with_lm_eval_item_by_item_on_tiny_qwen3(
    compose, shared_dir, tmp_path_factory, overrides
):
    pytest.importorskip("lm_eval")
    from medrl.harness_agreement import run

    cfg = compose("harness_agreement", ["model=tiny_qwen3", "evaluation.limit=5", *overrides])
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")

    agreement = run(cfg)

    assert agreement.n == 5
    assert (agreement.raw_rate, agreement.norm_rate) == (1.0, 1.0)
    assert agreement.max_abs_diff < 1e-4, "float32 on both sides"
    assert agreement.differing == []
    assert agreement.medrl_accuracy == agreement.harness_acc
    assert agreement.medrl_accuracy_norm == agreement.harness_acc_norm
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "agreement.json").read_text())["raw_rate"] == 1.0
    assert (out / "harness" / "samples.jsonl").is_file()
    assert (out / "medrl" / "predictions.jsonl").is_file()


def test_benchmarks_are_refused_since_the_comparison_reads_one_dataset(compose, tmp_path):
    pytest.importorskip("lm_eval")
    from medrl.harness_agreement import run

    cfg = compose("harness_agreement", ["model=tiny_qwen3", "evaluation.benchmarks=[medqa]"])
    cfg.model.cache_dir = str(tmp_path / "never-built")
    with pytest.raises(ValueError, match="evaluation.benchmarks is not read here"):
        run(cfg)
    assert not (tmp_path / "never-built").exists()
