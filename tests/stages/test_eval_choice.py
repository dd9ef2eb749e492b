"""The eval stage and `python -m medrl.eval` in forced choice (evaluation.mode=choice_logprob) on
the smoke config: the same files as generation, accuracy_norm beside accuracy, paired tests on
the raw answers; open-ended formats refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrl.evaluation import read_predictions
from medrl.train import run

CHOICE = "evaluation.mode=choice_logprob"


def test_smoke_sft_then_forced_choice_eval_writes_predictions_summary_and_report(
    compose, shared_dir, tmp_path_factory
):
    cfg = compose("train", ["debug=smoke", "algorithm=sft", CHOICE])
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    out = Path(cfg.paths.output_dir)

    result = run(cfg)

    for name in ("base", "sft"):
        predictions = read_predictions(out / "eval" / name / "predictions.jsonl")
        assert len(predictions) == 8
        for p in predictions:
            assert list(p.option_logprobs) == ["A", "B", "C", "D"]
            assert p.answer == max(p.option_logprobs, key=p.option_logprobs.get)
            assert p.completion == p.answer and p.option_lengths == dict.fromkeys("ABCD", 1)
            assert p.correct_norm == (p.answer_norm == p.gold)
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert set(summary) == {"base", "sft"}
    for name, values in summary.items():
        predictions = read_predictions(out / "eval" / name / "predictions.jsonl")
        assert values["accuracy"] == sum(p.correct for p in predictions) / 8
        assert values["accuracy_norm"] == sum(p.correct_norm for p in predictions) / 8
        assert "accuracy_norm_ci_low" in values and "format_rate" not in values
    assert result == summary["sft"]["accuracy"]
    report = (out / "eval" / "report.md").read_text()
    assert "| accuracy_norm [95% CI] |" in report and "| sft | 8 |" in report
    assert "| base -> sft | 8 |" in report, "paired tests, on the raw answers"
    assert "evaluation.choice.continuation=label" in report
    assert (out / "eval" / "comparison.png").stat().st_size > 0


def test_medrl_eval_scores_the_base_model_by_forced_choice(compose, shared_dir, tmp_path_factory):
    from medrl.eval import run as run_eval_entry

    overrides = ["model=tiny_qwen3", "format=letter", "dataset.pools.eval.limit=4", CHOICE]
    cfg = compose("eval", overrides)
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")

    accuracy = run_eval_entry(cfg)

    out = Path(cfg.paths.output_dir)
    predictions = read_predictions(out / "eval" / "base" / "predictions.jsonl")
    assert len(predictions) == 4 and all(p.option_logprobs for p in predictions)
    assert accuracy == sum(p.correct for p in predictions) / 4
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["eval/accuracy_norm"] == sum(p.correct_norm for p in predictions) / 4


FREE_TEXT = ["dataset=pubmedqa", "format=free_text", "reward=free_text", CHOICE]
REFUSAL = "evaluation.mode=choice_logprob scores answer options, and format=free_text"


def test_medrl_eval_refuses_forced_choice_on_free_text_before_loading(compose, tmp_path):
    from medrl.eval import run as run_eval_entry

    cfg = compose("eval", ["model=tiny_qwen3", *FREE_TEXT])
    cfg.model.cache_dir = str(tmp_path / "never-built")
    with pytest.raises(ValueError, match=REFUSAL):
        run_eval_entry(cfg)
    assert not (tmp_path / "never-built").exists(), "no model was built or loaded"


def test_training_refuses_forced_choice_on_free_text_before_any_stage(compose, tmp_path):
    cfg = compose("train", ["debug=smoke", "algorithm=sft", "preflight.enabled=false", *FREE_TEXT])
    cfg.model.cache_dir = str(tmp_path / "never-built")
    with pytest.raises(ValueError, match=REFUSAL):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
