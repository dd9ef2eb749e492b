"""Metrics, tables and the chart of forced-choice predictions: accuracy_norm beside accuracy
(Wilson), the generation-only rates left out, paired tests on the raw answer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medrl.evaluation import (
    bar_chart,
    chart_metrics,
    choice_metrics,
    choice_table_markdown,
    flat_metrics,
    write_markdown_report,
)
from medrl.evaluation.metrics import GENERATION_ONLY
from medrl.stages.evaluate import closed_metrics


def forced(pred, answer_norm: str):
    """A generated-looking Prediction made forced-choice: a length-normalized answer too."""
    return replace(
        pred,
        answer_norm=answer_norm,
        correct_norm=answer_norm == pred.gold,
        option_logprobs={"A": -1.0, "B": -2.0},
        option_lengths={"A": 1, "B": 1},
    )


@pytest.fixture
def points(make_pred):
    """Two models on four items (gold A A B A). base: raw 2/4, normalized 3/4;
    sft: raw 3/4 (one item lost, two gained against base), normalized 1/4."""
    base = [
        forced(make_pred("q1", "A", "A"), "A"),
        forced(make_pred("q2", "B", "A"), "A"),
        forced(make_pred("q3", "B", "B"), "B"),
        forced(make_pred("q4", "B", "A"), "B"),
    ]
    sft = [
        forced(make_pred("q1", "A", "A"), "B"),
        forced(make_pred("q2", "A", "A"), "B"),
        forced(make_pred("q3", "A", "B"), "A"),
        forced(make_pred("q4", "A", "A"), "A"),
    ]
    return {"base": base, "sft": sft}


def test_choice_metrics_add_accuracy_norm_and_leave_out_what_only_generation_measures(points):
    metrics = choice_metrics(points["base"], labels="AB", n_boot=20)
    assert (metrics["accuracy"].value, metrics["accuracy_norm"].value) == (0.5, 0.75)
    # Wilson at 3/4: center (0.75 + z^2/8) / (1 + z^2/4), the same interval as any 3 of 4.
    assert (metrics["accuracy_norm"].low, metrics["accuracy_norm"].high) == pytest.approx(
        (0.3006, 0.9544), abs=1e-4
    )
    assert not set(GENERATION_ONLY) & set(metrics)
    assert list(flat_metrics(metrics))[:7] == [
        "n",
        "accuracy",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "accuracy_norm",
        "accuracy_norm_ci_low",
        "accuracy_norm_ci_high",
    ]


def test_choice_metrics_refuse_generated_predictions(make_pred):
    with pytest.raises(ValueError, match=r"\[g1\] have no length-normalized answer"):
        choice_metrics([make_pred("g1", "A", "A")])


def test_the_paired_tests_compare_the_raw_answers(points):
    results, pairs = closed_metrics(points, "AB", num_samples=1, seed=0, forced=True)
    pair = pairs["base -> sft"]
    assert (pair.acc_a, pair.acc_b) == (0.5, 0.75)  # raw, not normalized (0.75 -> 0.25)
    assert (pair.b, pair.c) == (1, 2)  # q3 lost; q2 and q4 gained
    assert results["sft"]["accuracy_norm"].value == 0.25


def test_the_choice_table_and_report(points, tmp_path):
    results, pairs = closed_metrics(points, "AB", num_samples=1, seed=0, forced=True)
    # 2/4: Wilson [0.150, 0.850], half 0.350; 3/4: [0.301, 0.954], 0.327; 1/4: [0.046, 0.699].
    assert choice_table_markdown(results) == (
        "| model | n | accuracy [95% CI] | accuracy ± (half-width) "
        "| accuracy_norm [95% CI] | accuracy_norm ± (half-width) |\n"
        "| --- | ---: | --- | ---: | --- | ---: |\n"
        "| base | 4 | 0.500 [0.150, 0.850] | 0.350 | 0.750 [0.301, 0.954] | 0.327 |\n"
        "| sft | 4 | 0.750 [0.301, 0.954] | 0.327 | 0.250 [0.046, 0.699] | 0.327 |\n"
        "\n"
        'Majority-class baseline: 0.750 (always "A").\n'
    )
    path = write_markdown_report(tmp_path / "report.md", results, pairs, method="Scored: X.")
    text = path.read_text()
    assert "Forced choice (evaluation.mode=choice_logprob)" in text and "\nScored: X.\n" in text
    assert "| base -> sft | 4 | 0.500 | 0.750 |" in text
    assert "| format compliance" not in text  # no generation columns
    assert chart_metrics(results) == ("accuracy", "accuracy_norm")
    assert bar_chart(results, tmp_path / "c.png", chart_metrics(results)).stat().st_size > 0
