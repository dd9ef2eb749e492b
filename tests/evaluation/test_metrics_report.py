"""compute_metrics, its building blocks and paired_comparison on hand-computed examples.

Wilson bounds below were worked from the formula with z = 1.959964:
    center = (p + z^2/2n) / (1 + z^2/n),  half = z/(1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2);
at p = 0 the upper bound is z^2 / (n + z^2), at p = 1 the lower bound is n / (n + z^2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medrl.evaluation import (
    Estimate,
    SubjectAccuracy,
    bootstrap_ci,
    bootstrap_mean,
    chance_corrected,
    compute_metrics,
    flat_metrics,
    macro_f1,
    majority_baseline,
    majority_label,
    mcnemar_exact,
    paired_comparison,
    proportion,
    wilson_interval,
)
from medrl.evaluation.power import mcnemar_mde

MCQ = ("A", "B", "C", "D")
YNM = ("yes", "no", "maybe")
FAST = 200  # bootstrap resamples in tests: enough for the properties checked, and fast


@pytest.fixture
def six(make_pred):
    """Six MCQ items: 3 right, 1 unparsed (and truncated), gold A A B B A A."""
    return [
        make_pred("q1", "A", "A", num_tokens=10, subject="anatomy"),
        make_pred("q2", "B", "A", num_tokens=20, subject="anatomy"),
        make_pred("q3", None, "B", num_tokens=30, truncated=True, subject="physiology"),
        make_pred("q4", "B", "B", num_tokens=20, schema_ok=False, subject="physiology"),
        make_pred("q5", "A", "A", num_tokens=10),
        make_pred("q6", "C", "A", num_tokens=30, format_ok=False, schema_ok=False),
    ]


def close(estimate: Estimate, value: float, low: float, high: float, n: int) -> None:
    assert estimate.n == n
    assert [estimate.value, estimate.low, estimate.high] == pytest.approx(
        [value, low, high], abs=1e-4
    )


# ---- proportions -------------------------------------------------------------------------------


def test_proportion_is_the_wilson_interval_including_p_zero_and_one():
    close(proportion(3, 6), 0.5, 0.1876, 0.8124, 6)
    zero, one = proportion(0, 5), proportion(5, 5)
    assert zero.low == 0.0 and one.high == 1.0  # exact, not rounded
    close(zero, 0.0, 0.0, 1.959964**2 / (5 + 1.959964**2), 5)  # 0.4345
    close(one, 1.0, 5 / (5 + 1.959964**2), 1.0, 5)  # 0.5655


def test_proportion_of_no_items_is_undefined():
    estimate = proportion(0, 0)
    assert estimate.n == 0
    assert all(math.isnan(x) for x in (estimate.value, estimate.low, estimate.high))


def test_compute_metrics_rates_of_six_items(six):
    m = compute_metrics(six, labels=MCQ, n_boot=FAST)
    assert m["n"] == 6
    close(m["accuracy"], 3 / 6, 0.1876, 0.8124, 6)
    close(m["format_rate"], 4 / 6, 0.3000, 0.9032, 6)  # q3 unparsed, q6 bad format
    close(m["valid_json_rate"], 5 / 6, 0.4365, 0.9699, 6)  # only q3 is not JSON
    close(m["schema_pass_rate"], 3 / 6, 0.1876, 0.8124, 6)  # q1 q2 q5
    close(m["accuracy_on_schema"], 2 / 3, 0.2077, 0.9385, 3)  # q1 q5 right, q2 wrong
    close(m["parse_fail_rate"], 1 / 6, 0.0301, 0.5635, 6)
    close(m["truncated_rate"], 1 / 6, 0.0301, 0.5635, 6)


def test_accuracy_on_schema_is_undefined_without_schema_valid_items(make_pred):
    preds = [make_pred(f"q{i}", "A", "A", schema_ok=False) for i in range(3)]
    estimate = compute_metrics(preds, n_boot=FAST)["accuracy_on_schema"]
    assert estimate.n == 0 and math.isnan(estimate.value) and math.isnan(estimate.low)


# ---- majority baseline and chance correction ---------------------------------------------------


def test_majority_baseline_label_and_chance_corrected_accuracy(six):
    gold = [p.gold for p in six]  # A A B B A A
    assert majority_label(gold) == "A"
    assert majority_baseline(gold) == pytest.approx(4 / 6)
    assert majority_label(["B", "A", "B", "A", "C"]) == "A"  # ties: alphabetically first
    # (0.5 - 2/3) / (1 - 2/3) = -0.5: worse than always answering "A"
    assert chance_corrected(0.5, 4 / 6) == pytest.approx(-0.5)
    assert chance_corrected(1.0, 0.25) == 1.0 and chance_corrected(0.25, 0.25) == 0.0
    assert math.isnan(chance_corrected(1.0, 1.0))

    m = compute_metrics(six, labels=MCQ, n_boot=FAST)
    assert m["majority_label"] == "A"
    close(m["majority_baseline"], 4 / 6, 0.3000, 0.9032, 6)
    kappa = m["chance_corrected_accuracy"]
    assert kappa.value == pytest.approx(-0.5) and kappa.n == 6
    assert kappa.low <= kappa.value <= kappa.high


def test_medmcqa_like_always_a_baseline():
    gold = ["A"] * 322 + ["B"] * 250 + ["C"] * 228 + ["D"] * 200
    assert majority_baseline(gold) == pytest.approx(0.322)


def test_chance_correction_is_undefined_when_every_gold_label_is_the_same(make_pred):
    preds = [make_pred("q1", "A", "A"), make_pred("q2", "B", "A")]
    m = compute_metrics(preds, labels=MCQ, n_boot=FAST)
    assert m["majority_baseline"].value == 1.0
    assert math.isnan(m["chance_corrected_accuracy"].value)


# ---- tokens and efficiency ---------------------------------------------------------------------


def test_mean_tokens_and_efficiency(six):
    m = compute_metrics(six, labels=MCQ, n_boot=FAST)
    tokens, efficiency = m["mean_tokens"], m["efficiency"]
    assert tokens.value == pytest.approx(20.0)  # (10+20+30+20+10+30) / 6
    assert 10.0 <= tokens.low <= tokens.value <= tokens.high <= 30.0
    assert efficiency.value == pytest.approx(0.5 / 20.0 * 100)  # 2.5 points per 100 tokens
    assert efficiency.low <= efficiency.value <= efficiency.high


def test_efficiency_is_undefined_when_no_tokens_are_generated(make_pred):
    preds = [make_pred("q1", "A", "A", num_tokens=0), make_pred("q2", "A", "B", num_tokens=0)]
    m = compute_metrics(preds, n_boot=FAST)
    assert m["mean_tokens"].value == 0.0 and math.isnan(m["efficiency"].value)


def test_bootstrap_mean_is_the_seeded_percentile_bootstrap():
    values = [1.0, 4.0, 2.0, 8.0, 5.0]
    estimate = bootstrap_mean(values, n_boot=FAST, seed=3)
    idx = np.random.default_rng(3).integers(0, 5, size=(FAST, 5))
    means = np.asarray(values)[idx].mean(axis=1)
    assert estimate == Estimate(4.0, *np.percentile(means, [2.5, 97.5]), n=5)
    assert bootstrap_mean(values, n_boot=FAST, seed=3) == estimate  # deterministic
    assert bootstrap_mean([7.0, 7.0, 7.0], n_boot=FAST) == Estimate(7.0, 7.0, 7.0, 3)


def test_bootstrap_drops_undefined_resamples_and_rejects_bad_sizes():
    def half_undefined(idx):
        return np.where(idx[:, 0] == 0, np.nan, 1.0)

    assert bootstrap_ci(half_undefined, 2, n_boot=FAST) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci(lambda idx: idx[:, 0] * np.nan, 3, 10))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(half_undefined, 2, n_boot=0)
    with pytest.raises(ValueError, match="n >= 1"):
        bootstrap_ci(half_undefined, 0)
    with pytest.raises(ValueError, match="zero values"):
        bootstrap_mean([])


# ---- histograms, per subject -------------------------------------------------------------------


def test_answer_and_gold_histograms(six):
    m = compute_metrics(six, labels=MCQ, n_boot=FAST)
    assert m["answer_histogram"] == {"A": 2, "B": 2, "C": 1, "D": 0, "none": 1}
    assert m["gold_histogram"] == {"A": 4, "B": 2, "C": 0, "D": 0}
    # Without labels: the gold labels sorted, then other answers, then "none".
    m = compute_metrics(six, n_boot=FAST)
    assert m["answer_histogram"] == {"A": 2, "B": 2, "C": 1, "none": 1}
    assert m["gold_histogram"] == {"A": 4, "B": 2}


def test_per_subject_accuracy_covers_items_with_a_subject(six, make_pred):
    per_subject = compute_metrics(six, n_boot=FAST)["per_subject"]
    low, high = wilson_interval(1, 2)
    assert per_subject == {
        "anatomy": SubjectAccuracy(2, 0.5, low, high),
        "physiology": SubjectAccuracy(2, 0.5, low, high),
    }
    no_subjects = [make_pred("q1", "A", "A"), make_pred("q2", "B", "A")]
    assert compute_metrics(no_subjects, n_boot=FAST)["per_subject"] == {}


# ---- macro-F1 ----------------------------------------------------------------------------------


def test_macro_f1_on_a_hand_worked_yes_no_maybe_example():
    gold = ["yes", "yes", "yes", "no", "no", "maybe"]
    pred = ["yes", "no", "yes", "no", None, "yes"]
    # yes:   TP 2, FP 1 (item 6), FN 1 (item 2) -> P 2/3, R 2/3, F1 2/3
    # no:    TP 1, FP 1 (item 2), FN 1 (item 5, unparsed) -> F1 1/2
    # maybe: TP 0, FP 0, FN 1 -> F1 0 (gold but never predicted: counted as 0)
    assert macro_f1(gold, pred, YNM) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_macro_f1_excludes_classes_without_gold_or_predictions():
    # "maybe" never occurs and is never predicted: left out, not scored 0.
    assert macro_f1(["yes", "no"], ["yes", "no"], YNM) == 1.0
    # Predicted but never gold: F1 = 0 and counted.
    assert macro_f1(["yes", "yes"], ["yes", "maybe"], YNM) == pytest.approx((2 / 3 + 0) / 2)
    with pytest.raises(ValueError, match="length"):
        macro_f1(["yes"], [])


def test_macro_f1_in_compute_metrics(six, make_pred):
    # Over A-D: F1_A = 2*2 / (2*2 + 0 + 2) = 2/3, F1_B = 2 / (2 + 1 + 1) = 1/2,
    # F1_C = 0 (predicted once, never gold), D excluded (0/0).
    m = compute_metrics(six, labels=MCQ, n_boot=FAST)
    assert m["macro_f1"].value == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # Over the gold label set {A, B} only (C is just a wrong answer then).
    assert compute_metrics(six, n_boot=FAST)["macro_f1"].value == pytest.approx(7 / 12)
    ynm = [
        make_pred("p1", "yes", "yes"),
        make_pred("p2", "no", "yes"),
        make_pred("p3", "maybe", "maybe"),
        make_pred("p4", "no", "no"),
    ]
    m = compute_metrics(ynm, labels=YNM, n_boot=FAST)
    f1 = m["macro_f1"]
    # yes 2/3, no 2/3, maybe 1
    assert f1.value == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert 0.0 <= f1.low <= f1.value <= f1.high <= 1.0
    assert m["accuracy"].value == 0.75


# ---- errors and flat view ----------------------------------------------------------------------


def test_compute_metrics_rejects_no_items_and_unknown_gold_labels(make_pred):
    with pytest.raises(ValueError, match="zero predictions"):
        compute_metrics([])
    with pytest.raises(ValueError, match=r"\['maybe'\]"):
        compute_metrics([make_pred("q1", "yes", "maybe")], labels=("yes", "no"))


def test_compute_metrics_is_deterministic_for_a_seed(six):
    assert compute_metrics(six, n_boot=FAST, seed=5) == compute_metrics(six, n_boot=FAST, seed=5)


def test_flat_metrics_uses_the_summarize_key_scheme(six):
    flat = flat_metrics(compute_metrics(six, labels=MCQ, n_boot=FAST))
    assert flat["n"] == 6.0 and flat["accuracy"] == 0.5
    assert (flat["accuracy_ci_low"], flat["accuracy_ci_high"]) == wilson_interval(3, 6)
    assert "mean_tokens_ci_high" in flat and "answer_histogram" not in flat
    assert all(isinstance(v, float) for v in flat.values())


# ---- McNemar and paired comparison -------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 9, 2 * (1 + 10) / 1024),  # 2 * [C(10,0) + C(10,1)] / 2^10 = 0.021484375
        (9, 1, 0.021484375),
        (0, 0, 1.0),
        (5, 5, 1.0),  # 2 * P(X <= 5) > 1, capped
        (0, 5, 2 / 32),
        (2, 0, 0.5),
        (3, 7, 2 * (1 + 10 + 45 + 120) / 1024),
    ],
)
def test_mcnemar_exact_on_known_tables(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_handles_large_counts_and_rejects_negative_ones():
    assert 0.0 <= mcnemar_exact(1400, 1600) < 0.001
    assert mcnemar_exact(1500, 1500) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_is_symmetric_and_a_probability(b, c):
    p = mcnemar_exact(b, c)
    assert p == mcnemar_exact(c, b)
    assert 0.0 < p <= 1.0


@pytest.fixture
def pair(make_pred):
    """12 items: 2 both right, 1 only A right (b), 9 only B right (c); B in another order."""
    outcomes = [(True, True)] * 2 + [(True, False)] + [(False, True)] * 9
    a = [make_pred(f"q{i}", "A" if ra else "B", "A") for i, (ra, _) in enumerate(outcomes)]
    b = [make_pred(f"q{i}", "A" if rb else "C", "A") for i, (_, rb) in enumerate(outcomes)]
    return a, b[::-1]


def test_paired_comparison_counts_discordant_pairs_and_tests_them(pair):
    result = paired_comparison(*pair, n_boot=FAST, seed=1)
    assert (result.n, result.b, result.c) == (12, 1, 9)
    assert result.acc_a == pytest.approx(3 / 12) and result.acc_b == pytest.approx(11 / 12)
    assert result.diff == pytest.approx(8 / 12)
    assert result.p_value == pytest.approx(0.021484375)
    # Derived: discordance (1 + 9) / 12, and what McNemar's test could detect there.
    assert (result.discordance, result.mde) == (10 / 12, mcnemar_mde(12, 10 / 12))
    assert result.diff_low <= result.diff <= result.diff_high
    assert result.diff_low >= -1.0 and result.diff_high <= 1.0


def test_paired_bootstrap_is_deterministic_for_a_seed_and_paired(pair):
    a, b = pair
    assert paired_comparison(a, b, n_boot=FAST, seed=7) == paired_comparison(
        a, b, n_boot=FAST, seed=7
    )
    # Paired: per-item differences are resampled, so with identical lists the interval is 0.
    same = paired_comparison(a, a, n_boot=FAST)
    assert (same.diff, same.diff_low, same.diff_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # The resamples are those of bootstrap_ci on the per-item differences (B - A).
    by_id = {p.id: p for p in b}
    delta = np.array([by_id[p.id].correct - p.correct for p in a], dtype=float)
    low, high = bootstrap_ci(lambda idx: delta[idx].mean(axis=1), 12, FAST, 7)
    result = paired_comparison(a, b, n_boot=FAST, seed=7)
    assert (result.diff_low, result.diff_high) == (low, high)


def test_paired_comparison_names_ids_that_do_not_match(make_pred):
    a = [make_pred("q1", "A", "A"), make_pred("q2", "A", "A"), make_pred("q3", "A", "A")]
    b = [make_pred("q1", "A", "A"), make_pred("q2", "A", "A"), make_pred("q9", "A", "A")]
    with pytest.raises(ValueError, match=r"only in A: \[q3\]; only in B: \[q9\]"):
        paired_comparison(a, b)
    with pytest.raises(ValueError, match=r"repeats the ids \[q1\]"):
        paired_comparison([*a, a[0]], a)
    with pytest.raises(ValueError, match="zero"):
        paired_comparison([], [])
