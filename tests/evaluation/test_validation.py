"""Validation's pure pieces: its settings block, its schedule, its metrics and the best tracker."""

from __future__ import annotations

import math

import pytest

from medrl.evaluation import make_prediction
from medrl.evaluation.validation import (
    BestTracker,
    ValidationSettings,
    is_due,
    metric_problem,
    validation_metrics,
    validation_steps,
)
from medrl.prompts import get_format
from medrl.utils.config import config_values
from medrl.utils.settings import SettingsError


def test_the_defaults_are_the_yaml_values():
    assert ValidationSettings().__dict__ == config_values("validation/default")


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"every": -1}, "every"),
        ({"select": "first"}, "select"),
        ({"metric": "val/accuracy"}, "metric"),  # named without the val/ prefix
        ({"closed_metric": "token_f1"}, "closed_metric"),  # a text metric: open-ended only
        ({"open_ended_metric": "accuracy"}, "open_ended_metric"),  # needs gold labels
        ({"mode": "maximize"}, "mode"),
        ({"patience": 0}, "patience"),
        ({"min_delta": -0.1}, "min_delta"),
        ({"limit": 0}, "limit"),
        ({"every": 0, "select": "best"}, "select"),  # best of no validation
        ({"every": 0, "patience": 2}, "patience"),
        ({"val_every": 3}, "val_every"),  # unknown key
    ],
)
def test_a_bad_value_is_named_by_its_key(values, key):
    problems = ValidationSettings.check(values)
    assert [p.key for p in problems] == [key]
    with pytest.raises(SettingsError, match=f"validation.{key}"):
        ValidationSettings.from_values(values)


def test_the_followed_metric_is_the_formats_default_unless_metric_names_one():
    settings = ValidationSettings()
    assert settings.metric_for(open_ended=False) == "accuracy"
    assert settings.metric_for(open_ended=True) == "token_f1"
    chosen = ValidationSettings(metric="format_rate")
    assert chosen.metric_for(open_ended=False) == "format_rate"
    assert chosen.metric_for(open_ended=True) == "format_rate"


def test_a_metric_the_format_does_not_compute_is_named_with_the_valid_ones():
    assert metric_problem("format_rate", open_ended=True) is None
    assert metric_problem("macro_f1", open_ended=False) is None
    closed = metric_problem("rouge_l", open_ended=False)
    assert closed and closed.startswith("validation.metric='rouge_l' is not computed for a closed")
    assert "'accuracy'" in closed
    assert "open-ended" in (metric_problem("accuracy", open_ended=True) or "")


def test_validation_runs_at_step_0_every_n_steps_and_at_the_last_step():
    assert validation_steps(every=3, max_steps=10) == [0, 3, 6, 9, 10]
    assert validation_steps(every=5, max_steps=10) == [0, 5, 10]
    assert validation_steps(every=20, max_steps=10) == [0, 10]
    assert validation_steps(every=0, max_steps=10) == []


def test_a_step_is_due_once_at_each_multiple():
    assert is_due(6, every=3, last_validated=3)
    assert not is_due(6, every=3, last_validated=6), "accumulation ends several batches at 6"
    assert not is_due(7, every=3, last_validated=6)
    assert not is_due(6, every=0, last_validated=None)


def _prediction(record_id: str, gold: str, completion: str):
    record = _record(record_id, gold)
    return make_prediction(record, "prompt", completion, get_format("xml"), 5, False)


def _record(record_id: str, gold: str):
    from medrl.data.records import QARecord

    return QARecord(
        id=record_id,
        question=f"question {record_id}?",
        options={"A": "a", "B": "b", "C": "c", "D": "d"},
        answer=gold,
    )


def test_validation_metrics_hold_accuracy_with_its_wilson_interval_and_the_letter_histogram():
    answer = "<answer>{}</answer><explanation>because</explanation>"
    predictions = [
        _prediction("1", "A", answer.format("A")),  # right
        _prediction("2", "B", answer.format("A")),  # wrong
        _prediction("3", "C", answer.format("C")),  # right
        _prediction("4", "D", "no tags at all"),  # unparsed
    ]
    metrics = validation_metrics(predictions, ("A", "B", "C", "D"), seed=0)
    assert metrics["n"] == 4
    assert metrics["accuracy"] == pytest.approx(0.5)
    # Wilson 95% for 2/4: centre (2 + 1.96^2/2) / (4 + 1.96^2) = 3.9208 / 7.8416 = 0.5,
    # half-width 1.96 * sqrt(0.5 * 0.5 * 4 + 1.96^2 / 4) / 7.8416 = 1.96 * 1.40014 / 7.8416
    assert metrics["accuracy_ci_low"] == pytest.approx(0.5 - 0.34996, abs=1e-4)
    assert metrics["accuracy_ci_high"] == pytest.approx(0.5 + 0.34996, abs=1e-4)
    assert metrics["format_rate"] == pytest.approx(0.75)
    assert metrics["mean_tokens"] == pytest.approx(5.0)
    assert metrics["answer_histogram"] == {"A": 2, "B": 0, "C": 1, "D": 0, "none": 1}


def test_open_ended_validation_scores_text_overlap_with_the_reference():
    from medrl.data.records import QARecord

    record = QARecord(id="1", question="q?", options={}, answer="", explanation="aspirin works")
    free_text = get_format("free_text")
    exact = make_prediction(record, "prompt", "Aspirin works", free_text, 2, False)
    half = make_prediction(record, "prompt", "aspirin fails", free_text, 2, False)
    metrics = validation_metrics([exact, half], None, seed=0)
    assert metrics["n"] == 2 and "accuracy" not in metrics and "answer_histogram" not in metrics
    assert metrics["exact_match"] == pytest.approx(0.5)
    # token F1 of "aspirin fails" against "aspirin works": precision = recall = 1/2, F1 = 1/2
    assert metrics["token_f1"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["format_rate"] == pytest.approx(1.0)


def test_the_tracker_keeps_the_best_step_and_counts_patience():
    tracker = BestTracker("accuracy", "max", min_delta=0.0, patience=2)
    assert tracker.update(0, {"accuracy": 0.2})
    assert tracker.update(3, {"accuracy": 0.5})
    assert not tracker.update(6, {"accuracy": 0.5}), "a tie keeps the earlier step"
    assert not tracker.exhausted
    assert not tracker.update(9, {"accuracy": 0.4})
    assert tracker.exhausted, "two validations without improvement"
    assert (tracker.best_step, tracker.best_value) == (3, 0.5)
    assert [row["step"] for row in tracker.history] == [0, 3, 6, 9]


def test_min_delta_and_mode_min_decide_what_improves():
    tracker = BestTracker("mean_tokens", "min", min_delta=1.0)
    tracker.update(0, {"mean_tokens": 50.0})
    assert not tracker.update(1, {"mean_tokens": 49.5}), "better by less than min_delta"
    assert tracker.update(2, {"mean_tokens": 48.0})
    assert tracker.best_step == 2


def test_nan_never_improves_and_the_state_round_trips():
    tracker = BestTracker("accuracy", "max")
    tracker.update(0, {"accuracy": math.nan})
    assert tracker.best_step is None
    tracker.update(1, {"accuracy": 0.1})
    copy = BestTracker("accuracy", "max")
    copy.load(tracker.state())
    assert copy.state() == tracker.state()
    assert copy.best_step == 1
