"""Metrics of evaluation predictions with 95% intervals, and paired tests of two checkpoints.

Pure functions: predictions in, numbers out; no I/O, no logging, no global random state.

Intervals: proportions get the Wilson score interval (`wilson_interval`); every other statistic
gets a percentile bootstrap over items (resample the n items with replacement `n_boot` times from
`numpy.random.default_rng(seed)`, recompute the statistic, take the 2.5th and 97.5th
percentiles). Resamples on which a statistic is undefined (0/0) are left out of the percentiles.
All bootstrap statistics of one call draw the same resamples (same seed, same n), so their
intervals are mutually consistent.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from medrl.evaluation.power import mcnemar_mde
from medrl.evaluation.predictions import Prediction, wilson_interval

NONE_BUCKET = "none"  # the histogram bucket of completions with no parsed answer
_PERCENTILES = (2.5, 97.5)  # a two-sided 95% percentile interval
_MAX_DRAWS_PER_CHUNK = 1 << 19  # bootstrap indices drawn at once, to bound memory

# statistic(idx) -> one value per resample; idx is an int array [R, n] of item indices.
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval; n = the items it was computed on.

    An undefined statistic (e.g. accuracy among zero schema-valid items) is all nan.
    """

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def undefined(cls, n: int = 0) -> Estimate:
        return cls(math.nan, math.nan, math.nan, n)


class SubjectAccuracy(NamedTuple):
    """Accuracy on the items of one subject, with its Wilson interval."""

    n: int
    accuracy: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedResult:
    """Two prediction lists on the same n items: accuracy difference B - A and McNemar's test.

    diff_low / diff_high: paired percentile bootstrap interval of diff.
    b: items A got right and B wrong; c: items A got wrong and B right (the discordant pairs).
    p_value: McNemar's exact two-sided test of b vs c.
    discordance, mde (derived, not stored): (b + c) / n, and the minimum detectable difference
    at that n and discordance (`medrl.evaluation.power.mcnemar_mde`: 80% power, 5% two-sided;
    inf when too few items are discordant for any difference to be detectable).
    """

    n: int
    acc_a: float
    acc_b: float
    diff: float
    diff_low: float
    diff_high: float
    b: int
    c: int
    p_value: float

    @property
    def discordance(self) -> float:
        """(b + c) / n: the share of items on which exactly one of A and B is right."""
        return (self.b + self.c) / self.n

    @property
    def mde(self) -> float:
        """The smallest |B - A| McNemar's test detects with 80% power at the 5% level (two-sided)
        on these n items at the observed discordance; inf when none is detectable."""
        return mcnemar_mde(self.n, self.discordance)


# ---- building blocks -------------------------------------------------------------------------


def proportion(successes: int, n: int) -> Estimate:
    """successes / n with its Wilson interval; undefined (nan) when n = 0."""
    if n == 0:
        return Estimate.undefined()
    low, high = wilson_interval(successes, n)
    return Estimate(successes / n, low, high, n)


def bootstrap_ci(
    statistic: Statistic, n: int, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of `statistic` over n items.

    statistic(idx) receives an int array [R, n] of item indices (R resamples, drawn with
    replacement) and returns R values. Non-finite values (an undefined statistic on a resample)
    are dropped; when none is left the interval is (nan, nan). Deterministic for a seed.
    """
    if n < 1:
        raise ValueError(f"bootstrap needs n >= 1 items, got {n}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    rows = max(1, min(n_boot, _MAX_DRAWS_PER_CHUNK // n))
    stats = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        count = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(count, n))  # [R, n]
        stats[start : start + count] = statistic(idx)
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, _PERCENTILES)
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean of `values` with a percentile bootstrap 95% interval."""
    x = np.asarray(values, dtype=float)  # [n]
    if x.size == 0:
        raise ValueError("cannot take the mean of zero values")
    low, high = bootstrap_ci(lambda idx: x[idx].mean(axis=1), x.size, n_boot, seed)
    return Estimate(float(x.mean()), low, high, int(x.size))


def macro_f1(
    gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str] | None = None
) -> float:
    """Unweighted mean over classes of F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k).

    Classes are `labels` (default: the labels that occur in `gold`). A class with neither gold
    items nor predictions (0/0) is left out of the mean; one with gold items but no correct
    prediction scores 0. A prediction outside the classes, or None (unparsed), is a false
    negative of its item's gold class and a false positive of no class. nan if no class counts.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length: {len(gold)} vs {len(pred)}")
    classes = sorted(set(gold)) if labels is None else list(labels)
    tp, fp, fn = _confusion_indicators(gold, pred, classes)  # each [n, K]
    return float(_macro_f1_from_counts(tp.sum(axis=0), fp.sum(axis=0), fn.sum(axis=0)))


def majority_label(gold: Sequence[str]) -> str:
    """The most frequent gold label; ties go to the alphabetically first label."""
    if not gold:
        raise ValueError("no gold labels")
    counts = Counter(gold)
    top = max(counts.values())
    return min(label for label, count in counts.items() if count == top)


def majority_baseline(gold: Sequence[str]) -> float:
    """Accuracy of always answering the most frequent gold label: max_k count_k / n."""
    if not gold:
        raise ValueError("no gold labels")
    return max(Counter(gold).values()) / len(gold)


def chance_corrected(accuracy: float, baseline: float) -> float:
    """Cohen-style (accuracy - baseline) / (1 - baseline); nan when baseline = 1.

    0 = no better than the baseline, 1 = perfect, negative = worse than the baseline.
    """
    if baseline >= 1.0:
        return math.nan
    return (accuracy - baseline) / (1.0 - baseline)


def binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly: sum_{i<=k} C(n, i) / 2^n."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    # Python integers are exact and int / int is correctly rounded, even for huge n.
    return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)


def discordant_counts(right_a: np.ndarray, right_b: np.ndarray) -> tuple[int, int]:
    """(b, c) of McNemar's test over paired boolean arrays: b = A right and B wrong,
    c = A wrong and B right."""
    return int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value of the discordant counts b and c (McNemar 1947).

    Under H0 each discordant item goes either way with probability 1/2:
        p = min(1, 2 * BinomCDF(min(b, c); b + c, 1/2)),  and p = 1 when b + c = 0.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf_half(min(b, c), b + c))


# ---- metrics of one prediction list ----------------------------------------------------------


def compute_metrics(
    predictions: Sequence[Prediction],
    labels: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one prediction list; every rate and score is an `Estimate` (95% CI).

    labels: the task's answer labels in display order (("A", "B", "C", "D"),
    ("yes", "no", "maybe")); they order the histograms and are the classes of macro-F1.
    Default: the gold labels, sorted. A gold label outside `labels` is an error.

    Keys:
      n                          number of predictions (int)
      accuracy                   correct / n; an unparsed answer is wrong (Wilson)
      format_rate                format_ok / n (Wilson)
      valid_json_rate            json_valid / n (Wilson)
      schema_pass_rate           schema_ok / n (Wilson)
      accuracy_on_schema         correct among schema_ok items (Wilson; undefined (nan, n=0)
                                 when no item is schema-valid)
      parse_fail_rate            answer is None / n (Wilson)
      truncated_rate             truncated / n (Wilson)
      mean_tokens                mean generated tokens per response (bootstrap)
      efficiency                 accuracy / mean_tokens * 100, accuracy per 100 tokens
                                 (bootstrap; nan when mean_tokens = 0)
      majority_label             the most frequent gold label (str)
      majority_baseline          share of that label among the gold answers (Wilson)
      chance_corrected_accuracy  (accuracy - majority_baseline) / (1 - majority_baseline)
                                 (bootstrap, both terms recomputed per resample)
      macro_f1                   `macro_f1` over `labels` (bootstrap)
      answer_histogram           {label: count} of parsed answers, plus "none" for unparsed
      gold_histogram             {label: count} of gold answers
      per_subject                {subject: SubjectAccuracy} over items with a subject, sorted
                                 by subject; {} when no item has one
      per_source                 {source: SubjectAccuracy} when the items come from several
                                 datasets (a mixture), in order of appearance; else {}

    Chance correction uses the majority-class rate, not 1/K: answer distributions are skewed
    (always "A" scores 32.2% on MedMCQA validation, always "yes" about 55% on PubMedQA), and the
    best constant answer is the baseline a model must beat to show it reads the question.
    """
    n = len(predictions)
    if n == 0:
        raise ValueError("cannot compute metrics of zero predictions")
    gold = [p.gold for p in predictions]
    answers = [p.answer for p in predictions]
    labels = _check_labels(gold, labels)

    correct = np.array([p.correct for p in predictions], dtype=float)  # [n]
    tokens = np.array([p.num_tokens for p in predictions], dtype=float)  # [n]
    gold_onehot = np.array([[g == k for k in labels] for g in gold], dtype=float)  # [n, K]
    tp, fp, fn = _confusion_indicators(gold, answers, labels)  # each [n, K]

    def boot(statistic: Statistic, value: float) -> Estimate:
        low, high = bootstrap_ci(statistic, n, n_boot, seed)
        return Estimate(value, low, high, n) if math.isfinite(value) else Estimate.undefined(n)

    def efficiency(idx: np.ndarray) -> np.ndarray:
        acc, mean_tok = correct[idx].mean(axis=1), tokens[idx].mean(axis=1)  # [R], [R]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(mean_tok > 0, acc / mean_tok * 100.0, np.nan)

    def kappa(idx: np.ndarray) -> np.ndarray:
        acc = correct[idx].mean(axis=1)  # [R]
        base = gold_onehot[idx].sum(axis=1).max(axis=1) / n  # [R]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base < 1.0, (acc - base) / (1.0 - base), np.nan)

    def f1(idx: np.ndarray) -> np.ndarray:
        return _macro_f1_from_counts(tp[idx].sum(axis=1), fp[idx].sum(axis=1), fn[idx].sum(axis=1))

    n_correct = int(correct.sum())
    schema_items = [p for p in predictions if p.schema_ok]
    mean_tokens = float(tokens.mean())
    accuracy = n_correct / n
    label = majority_label(gold)
    baseline = gold.count(label) / n
    return {
        "n": n,
        "accuracy": proportion(n_correct, n),
        "format_rate": proportion(sum(p.format_ok for p in predictions), n),
        "valid_json_rate": proportion(sum(p.json_valid for p in predictions), n),
        "schema_pass_rate": proportion(len(schema_items), n),
        "accuracy_on_schema": proportion(sum(p.correct for p in schema_items), len(schema_items)),
        "parse_fail_rate": proportion(sum(a is None for a in answers), n),
        "truncated_rate": proportion(sum(p.truncated for p in predictions), n),
        "mean_tokens": boot(lambda idx: tokens[idx].mean(axis=1), mean_tokens),
        "efficiency": boot(
            efficiency, accuracy / mean_tokens * 100.0 if mean_tokens > 0 else math.nan
        ),
        "majority_label": label,
        "majority_baseline": proportion(gold.count(label), n),
        "chance_corrected_accuracy": boot(kappa, chance_corrected(accuracy, baseline)),
        "macro_f1": boot(f1, macro_f1(gold, answers, labels)),
        "answer_histogram": answer_histogram(answers, labels),
        "gold_histogram": {k: gold.count(k) for k in labels},
        "per_subject": per_subject_accuracy(predictions),
        "per_source": per_source_accuracy(predictions),
    }


# What only generation measures: the forced choice always answers with a label, writes nothing
# to parse and generates no tokens, so these are left out of its metrics.
GENERATION_ONLY = (
    "format_rate",
    "valid_json_rate",
    "schema_pass_rate",
    "accuracy_on_schema",
    "parse_fail_rate",
    "truncated_rate",
    "mean_tokens",
    "efficiency",
)


def choice_metrics(
    predictions: Sequence[Prediction],
    labels: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of forced-choice predictions (evaluation.mode=choice_logprob): `compute_metrics`
    of the raw answers (accuracy, the majority baseline, chance correction, macro-F1, the
    histograms, per subject and source) without the GENERATION_ONLY rates, plus

      accuracy_norm   correct_norm / n: the length-normalized answer's accuracy, lm-eval's
                      acc_norm (or acc_bytes) (Wilson)

    A prediction without correct_norm (a generated one) is an error naming the item."""
    missing = [p.id for p in predictions if p.correct_norm is None]
    if missing:
        raise ValueError(
            f"predictions {_preview(missing)} have no length-normalized answer (correct_norm): "
            "not forced-choice predictions (evaluation.mode=choice_logprob)"
        )
    norm = proportion(sum(bool(p.correct_norm) for p in predictions), len(predictions))
    metrics: dict[str, Any] = {}
    for key, value in compute_metrics(predictions, labels, n_boot, seed).items():
        if key not in GENERATION_ONLY:
            metrics[key] = value
        if key == "accuracy":  # beside each other in summary.json and the loggers
            metrics["accuracy_norm"] = norm
    return metrics


def answer_histogram(answers: Sequence[str | None], labels: Sequence[str]) -> dict[str, int]:
    """{label: count} in `labels` order (zeros kept), then any other answers sorted, then
    "none": the count of unparsed answers."""
    counts = Counter(a for a in answers if a is not None)
    extra = sorted(set(counts) - set(labels))
    histogram = {k: counts.get(k, 0) for k in [*labels, *extra]}
    histogram[NONE_BUCKET] = sum(a is None for a in answers)
    return histogram


def per_subject_accuracy(predictions: Sequence[Prediction]) -> dict[str, SubjectAccuracy]:
    """{subject: (n, accuracy, Wilson low, high)} over the items that have a subject."""
    accuracy = _accuracy_by(predictions, lambda p: p.subject)
    return {subject: accuracy[subject] for subject in sorted(accuracy)}


def per_source_accuracy(predictions: Sequence[Prediction]) -> dict[str, SubjectAccuracy]:
    """{source dataset: (n, accuracy, Wilson low, high)} when the items come from two or more
    datasets (a mixture, medrl.data.mixture), in order of first appearance; else {}."""
    accuracy = _accuracy_by(predictions, lambda p: p.source)
    return accuracy if len(accuracy) > 1 else {}


def _accuracy_by(
    predictions: Sequence[Prediction], key: Callable[[Prediction], str | None]
) -> dict[str, SubjectAccuracy]:
    totals: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for p in predictions:
        group = key(p)
        if group is not None:
            totals[group] += 1
            right[group] += p.correct
    result = {}
    for group in totals:
        est = proportion(right[group], totals[group])
        result[group] = SubjectAccuracy(est.n, est.value, est.low, est.high)
    return result


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar part of `compute_metrics` as plain floats, for loggers and JSON.

    n (and samples_per_item when sampled), and for each Estimate `name`, `name_ci_low`,
    `name_ci_high` (the keys the eval stage logs), and for a mixture `accuracy_<source>` with
    its interval and `n_<source>`; histograms, labels and per-subject tables are left out.
    """
    flat: dict[str, float] = {"n": float(metrics["n"])}
    if "samples_per_item" in metrics:  # sampled evaluation (medrl.evaluation.sampling)
        flat["samples_per_item"] = float(metrics["samples_per_item"])
    for name, value in metrics.items():
        if isinstance(value, Estimate):
            flat |= {name: value.value, f"{name}_ci_low": value.low, f"{name}_ci_high": value.high}
    for source, acc in metrics.get("per_source", {}).items():
        key = f"accuracy_{source}"
        flat |= {f"n_{source}": float(acc.n), key: acc.accuracy}
        flat |= {f"{key}_ci_low": acc.low, f"{key}_ci_high": acc.high}
    return flat


# ---- paired comparison of two prediction lists ------------------------------------------------


def paired_comparison(
    a: Sequence[Prediction], b: Sequence[Prediction], n_boot: int = 2000, seed: int = 0
) -> PairedResult:
    """Compare checkpoint B with checkpoint A on the same items (matched by id).

    diff = acc_b - acc_a with a paired percentile bootstrap interval (one set of resampled item
    indices for both lists), and McNemar's exact test of the discordant pairs. Raises ValueError
    when the lists are empty, repeat an id, or cover different ids (naming them).
    """
    by_id_a, by_id_b = _index_by_id(a, "A"), _index_by_id(b, "B")
    only_a = sorted(set(by_id_a) - set(by_id_b))
    only_b = sorted(set(by_id_b) - set(by_id_a))
    if only_a or only_b:
        raise ValueError(
            "paired comparison needs the same items: "
            f"only in A: {_preview(only_a)}; only in B: {_preview(only_b)}"
        )
    if not by_id_a:
        raise ValueError("cannot compare zero predictions")
    ids = list(by_id_a)  # A's order
    right_a = np.array([by_id_a[i].correct for i in ids], dtype=bool)  # [n]
    right_b = np.array([by_id_b[i].correct for i in ids], dtype=bool)  # [n]
    delta = right_b.astype(float) - right_a.astype(float)  # [n]
    low, high = bootstrap_ci(lambda idx: delta[idx].mean(axis=1), len(ids), n_boot, seed)
    b_count, c_count = discordant_counts(right_a, right_b)
    return PairedResult(
        n=len(ids),
        acc_a=float(right_a.mean()),
        acc_b=float(right_b.mean()),
        diff=float(delta.mean()),
        diff_low=low,
        diff_high=high,
        b=b_count,
        c=c_count,
        p_value=mcnemar_exact(b_count, c_count),
    )


# ---- helpers ----------------------------------------------------------------------------------


def _check_labels(gold: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return sorted(set(gold))
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat a name: {labels}")
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ValueError(f"gold labels {unknown} are not among labels {labels}")
    return labels


def _confusion_indicators(
    gold: Sequence[str], pred: Sequence[str | None], classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item true-positive, false-positive and false-negative indicators, each [n, K]."""
    shape = (len(gold), len(classes))
    g = np.array([x == k for x in gold for k in classes], dtype=bool).reshape(shape)  # [n, K]
    p = np.array([x == k for x in pred for k in classes], dtype=bool).reshape(shape)  # [n, K]
    return (g & p).astype(np.int64), (~g & p).astype(np.int64), (g & ~p).astype(np.int64)


def _macro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Mean over the last axis of 2tp / (2tp + fp + fn), skipping classes where that is 0/0."""
    denom = 2 * tp + fp + fn  # [..., K]
    counted = (denom > 0).sum(axis=-1)  # [...]
    total = (2 * tp / np.maximum(denom, 1)).sum(axis=-1)  # a 0/0 class has tp = 0: adds 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counted > 0, total / counted, np.nan)


def _index_by_id(predictions: Sequence[Prediction], name: str) -> dict[str, Prediction]:
    by_id: dict[str, Prediction] = {}
    repeated = []
    for p in predictions:
        if p.id in by_id:
            repeated.append(p.id)
        by_id[p.id] = p
    if repeated:
        raise ValueError(f"list {name} repeats the ids {_preview(sorted(set(repeated)))}")
    return by_id


def _preview(ids: Sequence[str], limit: int = 10) -> str:
    if not ids:
        return "[]"
    shown = ", ".join(ids[:limit])
    more = f", ... ({len(ids) - limit} more)" if len(ids) > limit else ""
    return f"[{shown}{more}]"
