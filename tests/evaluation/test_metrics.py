"""Wilson intervals against hand-computed values, and the flat headline metrics of hand-built
predictions."""

from __future__ import annotations

import pytest

from medrl.evaluation import Prediction, compute_metrics, flat_metrics, wilson_interval


def prediction(
    answer: str | None, gold: str, format_ok: bool, num_tokens: int, truncated: bool = False
) -> Prediction:
    return Prediction(
        id=f"q{num_tokens}",
        prompt="p",
        completion="c",
        answer=answer,
        gold=gold,
        correct=answer == gold,
        format_ok=format_ok,
        json_valid=False,
        schema_ok=False,
        num_tokens=num_tokens,
        truncated=truncated,
    )


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        # z = 1.96: center = (p + z^2/2n) / (1 + z^2/n), half = z/(1 + z^2/n) sqrt(...)
        (8, 10, (0.4902, 0.9433)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (1, 2, (0.0945, 0.9055)),
        (50, 100, (0.4038, 0.5962)),
    ],
)
def test_wilson_interval_matches_hand_computed_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_bounds_are_exact_at_zero_and_one_and_symmetric():
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    low, high = wilson_interval(3, 11)
    mirror_low, mirror_high = wilson_interval(8, 11)
    assert low == pytest.approx(1 - mirror_high) and high == pytest.approx(1 - mirror_low)


@pytest.mark.parametrize(("successes", "n"), [(0, 0), (3, -1), (-1, 5), (6, 5)])
def test_wilson_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


def test_flat_metrics_count_accuracy_format_parse_failures_and_tokens():
    predictions = [
        prediction("B", "B", format_ok=True, num_tokens=4),
        prediction("A", "A", format_ok=False, num_tokens=6),
        prediction(None, "C", format_ok=False, num_tokens=8, truncated=True),
        prediction("D", "C", format_ok=True, num_tokens=2),
    ]
    flat = flat_metrics(compute_metrics(predictions, labels=["A", "B", "C", "D"]))
    low, high = wilson_interval(2, 4)
    expected = {
        "n": 4,
        "accuracy": 0.5,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "format_rate": 0.5,
        "format_rate_ci_low": low,
        "format_rate_ci_high": high,
        "parse_fail_rate": 0.25,
        "mean_tokens": 5.0,
        "truncated_rate": 0.25,
    }
    assert {key: flat[key] for key in expected} == pytest.approx(expected)


def test_metrics_of_nothing_are_an_error():
    with pytest.raises(ValueError, match="zero predictions"):
        compute_metrics([])
