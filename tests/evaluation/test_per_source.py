"""Accuracy per source dataset, for the items of a mixture (medrl/data/mixture.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medrl.evaluation import compute_metrics, flat_metrics, write_markdown_report
from medrl.evaluation.metrics import per_source_accuracy


@pytest.fixture
def mixed(make_pred):
    # medmcqa: 2 of 3 right; medqa: 0 of 2 right
    preds = [
        make_pred("1", "A", "A"),
        make_pred("2", "B", "B"),
        make_pred("3", "C", "A"),
        make_pred("4", None, "D"),
        make_pred("5", "A", "B"),
    ]
    sources = ["medmcqa", "medmcqa", "medmcqa", "medqa", "medqa"]
    return [replace(p, source=s) for p, s in zip(preds, sources, strict=True)]


def test_each_source_gets_its_count_accuracy_and_wilson_interval(mixed):
    per_source = per_source_accuracy(mixed)

    assert list(per_source) == ["medmcqa", "medqa"]
    assert per_source["medmcqa"].n == 3
    assert per_source["medmcqa"].accuracy == pytest.approx(2 / 3)
    # Wilson 95% for 2/3: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    assert per_source["medmcqa"].low == pytest.approx(0.2077, abs=1e-4)
    assert per_source["medmcqa"].high == pytest.approx(0.9385, abs=1e-4)
    assert (per_source["medqa"].n, per_source["medqa"].accuracy) == (2, 0.0)


def test_items_of_one_source_get_no_per_source_table(mixed):
    one = [replace(p, source="medmcqa") for p in mixed]

    assert per_source_accuracy(one) == {}
    assert "accuracy_medmcqa" not in flat_metrics(compute_metrics(one, labels="ABCD"))


def test_flat_metrics_and_the_report_carry_the_per_source_accuracy(mixed, tmp_path):
    metrics = compute_metrics(mixed, labels="ABCD")

    flat = flat_metrics(metrics)
    report = write_markdown_report(tmp_path / "report.md", {"sft": metrics}).read_text()

    assert flat["accuracy"] == pytest.approx(2 / 5)
    assert flat["accuracy_medmcqa"] == pytest.approx(2 / 3) and flat["n_medqa"] == 2
    assert flat["accuracy_medqa_ci_low"] == 0.0
    assert "## Accuracy per source" in report
    assert "| sft | medmcqa | 3 | 0.667 [0.208, 0.939] |" in report
