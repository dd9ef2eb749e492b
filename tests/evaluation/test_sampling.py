"""Sampled evaluation: k predictions per item -> majority vote, single-sample accuracy, pass@k."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medrl.evaluation import (
    compute_metrics,
    group_by_item,
    majority_vote,
    per_sample_rates,
    proportion,
    sampling_metrics,
    sampling_table_markdown,
    write_markdown_report,
)


def samples(make_pred, item: str, gold: str, answers: list[str | None]):
    """The k predictions of one item, sample indices 0..k-1 in order."""
    return [
        replace(make_pred(item, answer, gold), sample=index) for index, answer in enumerate(answers)
    ]


@pytest.fixture
def three_items(make_pred):
    """k = 3 samples for each of three items (gold B, A, C):
    q1: B, B, C   -> vote B (right), 2/3 right, pass
    q2: C, None, D -> vote C (first of the tie C/D), 0/3 right, no pass
    q3: None, C, None -> vote C (the only parsed answer), 1/3 right, pass
    """
    return (
        samples(make_pred, "q1", "B", ["B", "B", "C"])
        + samples(make_pred, "q2", "A", ["C", None, "D"])
        + samples(make_pred, "q3", "C", [None, "C", None])
    )


def test_group_by_item_keeps_first_seen_order_and_all_samples(three_items):
    groups = group_by_item(three_items)
    assert list(groups) == ["q1", "q2", "q3"]
    assert [[p.sample for p in g] for g in groups.values()] == [[0, 1, 2]] * 3


def test_items_with_different_k_or_missing_sample_indices_are_refused(make_pred):
    uneven = samples(make_pred, "q1", "A", ["A", "B"]) + samples(make_pred, "q2", "A", ["A"])
    with pytest.raises(ValueError, match="different numbers of samples"):
        group_by_item(uneven)
    gap = [
        replace(make_pred("q1", "A", "A"), sample=0),
        replace(make_pred("q1", "B", "A"), sample=2),
    ]
    with pytest.raises(ValueError, match="'q1'.*sample indices \\[0, 2\\]"):
        group_by_item(gap)


def test_majority_vote_counts_parsed_answers_and_breaks_ties_by_sample_order(three_items):
    voted = majority_vote(three_items)
    assert [(p.id, p.answer, p.sample, p.correct) for p in voted] == [
        ("q1", "B", 0, True),
        ("q2", "C", 0, False),
        ("q3", "C", 1, True),
    ]


def test_an_item_with_no_parsed_sample_keeps_sample_zero_and_counts_wrong(make_pred):
    [voted] = majority_vote(samples(make_pred, "q1", "A", [None, None]))
    assert (voted.sample, voted.answer, voted.correct) == (0, None, False)


def test_one_sample_per_item_votes_for_itself(make_pred):
    greedy = [make_pred("q1", "A", "A"), make_pred("q2", None, "B")]
    assert majority_vote(greedy) == greedy


def test_sampling_metrics_match_hand_computed_values(three_items):
    metrics = sampling_metrics(three_items, seed=3)
    assert metrics["samples_per_item"] == 3
    # Per-item share of right samples: 2/3, 0, 1/3 -> mean 1/3.
    assert metrics["sample_accuracy"].value == pytest.approx(1 / 3)
    assert metrics["sample_accuracy"].n == 3, "items, not samples, are the unit"
    low, high = metrics["sample_accuracy"].low, metrics["sample_accuracy"].high
    assert 0.0 <= low <= 1 / 3 <= high <= 2 / 3, "bootstrap over item means stays in their range"
    # pass@3: q1 and q3 have a right sample.
    assert metrics["pass_at_k"] == proportion(2, 3)


def test_output_rates_average_every_sample_not_the_vote_winner(three_items):
    rates = per_sample_rates(three_items, seed=3)
    # Parsed per item: 3/3, 2/3, 1/3 -> format rate 2/3, parse failures 1/3; the vote winners
    # (all parsed) would claim 1.0 and 0.0.
    assert rates["format_rate"].value == pytest.approx(2 / 3)
    assert rates["parse_fail_rate"].value == pytest.approx(1 / 3)
    assert rates["format_rate"].n == 3, "items, not samples, are the unit"
    assert rates["mean_tokens"].value == pytest.approx(10.0)
    # Single-sample accuracy 1/3 per 10 tokens -> 3.33 per 100 tokens.
    assert rates["efficiency"].value == pytest.approx(100 / 30)
    assert rates["truncated_rate"].value == 0.0


def test_the_report_has_a_sampling_table_scoring_the_vote(three_items, tmp_path):
    voted = majority_vote(three_items)
    results = {
        "sft": compute_metrics(voted)
        | per_sample_rates(three_items)
        | sampling_metrics(three_items)
    }
    table = sampling_table_markdown(results)
    row = next(line for line in table.splitlines() if line.startswith("| sft |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == ["sft", "3"]
    assert cells[2].startswith("0.667 ["), "maj@k accuracy = 2/3 items"
    assert cells[3].startswith("0.333 ["), "single-sample accuracy"
    assert cells[4].startswith("0.667 ["), "pass@3 = 2/3 items"
    report = write_markdown_report(tmp_path / "report.md", results).read_text()
    assert "## Sampling" in report and "majority vote" in report and "means over all k" in report
    assert "| sft | 3 | 0.667 [" in report and "| 0.667 [" in report
    greedy_only = {"sft": compute_metrics(voted)}
    assert "## Sampling" not in write_markdown_report(tmp_path / "g.md", greedy_only).read_text()
    with pytest.raises(ValueError, match="no sampled results"):
        sampling_table_markdown(greedy_only)
