"""Sampled evaluation: k completions per item, reduced to one answer per item plus k-metrics.

With `evaluation.num_samples = k > 1` every item has predictions with sample = 0..k-1. The
headline accuracy (and paired comparisons) use one answer per item, the majority vote (maj@k,
self-consistency, Wang et al. 2023). The rates that describe outputs (format compliance, parse
failures, truncation, tokens) are means over all k samples (`per_sample_rates`): taken from the
vote's winner they would describe only the best-behaved sample of each item. `sampling_metrics`
adds what only k samples show: single-sample accuracy and pass@k.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from medrl.evaluation.metrics import Estimate, bootstrap_ci, bootstrap_mean, proportion
from medrl.evaluation.predictions import Prediction


def group_by_item(predictions: Sequence[Prediction]) -> dict[str, list[Prediction]]:
    """{item id: its predictions} in first-seen order; every item must have the same k and
    sample indices 0..k-1 (else ValueError naming the item)."""
    groups: dict[str, list[Prediction]] = {}
    for prediction in predictions:
        groups.setdefault(prediction.id, []).append(prediction)
    sizes = {len(group) for group in groups.values()}
    if len(sizes) > 1:
        raise ValueError(f"items have different numbers of samples: {sorted(sizes)}")
    for item, group in groups.items():
        indices = sorted(p.sample for p in group)
        if indices != list(range(len(group))):
            raise ValueError(
                f"item {item!r}: sample indices {indices}, expected 0..{len(group) - 1}"
            )
    return groups


def majority_vote(predictions: Sequence[Prediction]) -> list[Prediction]:
    """One prediction per item: the lowest-index sample whose parsed answer is the most frequent.

    Unparsed samples do not vote; an item whose samples all fail to parse keeps sample 0 (wrong).
    Ties go to the answer reached first (lowest sample index), so the vote is deterministic.
    """
    voted = []
    for group in group_by_item(predictions).values():
        ordered = sorted(group, key=lambda p: p.sample)
        counts = Counter(p.answer for p in ordered if p.answer is not None)
        if not counts:
            voted.append(ordered[0])
            continue
        top = max(counts.values())
        winner = next(p for p in ordered if p.answer is not None and counts[p.answer] == top)
        voted.append(winner)
    return voted


def per_sample_rates(
    predictions: Sequence[Prediction], n_boot: int = 2000, seed: int = 0
) -> dict[str, Estimate]:
    """The output-describing metrics of `compute_metrics`, as means over all k samples.

    Each is the mean over items of the item's per-sample mean, with a bootstrap interval over
    items (items, not samples, are independent). efficiency = single-sample accuracy per 100
    generated tokens of a sample. Keys: format_rate, valid_json_rate, schema_pass_rate,
    parse_fail_rate, truncated_rate, mean_tokens, efficiency.
    """
    groups = list(group_by_item(predictions).values())
    if not groups:
        raise ValueError("cannot compute per-sample rates of zero predictions")

    def item_means(value) -> np.ndarray:  # [n] the mean of value(p) over each item's samples
        return np.array([[value(p) for p in g] for g in groups], dtype=float).mean(axis=1)

    correct, tokens = item_means(lambda p: p.correct), item_means(lambda p: p.num_tokens)
    rates = {
        "format_rate": item_means(lambda p: p.format_ok),
        "valid_json_rate": item_means(lambda p: p.json_valid),
        "schema_pass_rate": item_means(lambda p: p.schema_ok),
        "parse_fail_rate": item_means(lambda p: p.answer is None),
        "truncated_rate": item_means(lambda p: p.truncated),
        "mean_tokens": tokens,
    }
    estimates = {name: bootstrap_mean(values, n_boot, seed) for name, values in rates.items()}
    estimates["efficiency"] = _ratio_per_100(correct, tokens, n_boot, seed)
    return estimates


def _ratio_per_100(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int) -> Estimate:
    """100 * mean(num) / mean(den) with a bootstrap interval over items; nan when den is 0."""
    if den.mean() <= 0:
        return Estimate.undefined(len(num))

    def statistic(idx: np.ndarray) -> np.ndarray:  # idx [R, n]
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * num[idx].mean(axis=1) / den[idx].mean(axis=1)

    low, high = bootstrap_ci(statistic, len(num), n_boot, seed)
    return Estimate(float(100.0 * num.mean() / den.mean()), low, high, len(num))


def sampling_metrics(
    predictions: Sequence[Prediction], n_boot: int = 2000, seed: int = 0
) -> dict[str, Estimate | int]:
    """Metrics over k samples per item; intervals treat items (not samples) as the unit.

    Keys:
      samples_per_item    k (int)
      sample_accuracy     mean over items of the item's share of correct samples: the expected
                          accuracy of one sampled answer (bootstrap over items)
      pass_at_k           share of items with at least one correct sample (Wilson)
    """
    groups = list(group_by_item(predictions).values())
    if not groups:
        raise ValueError("cannot compute sampling metrics of zero predictions")
    correct = np.array([[p.correct for p in g] for g in groups], dtype=float).mean(axis=1)  # [n]

    return {
        "samples_per_item": len(groups[0]),
        "sample_accuracy": bootstrap_mean(correct, n_boot, seed),
        "pass_at_k": proportion(sum(any(p.correct for p in g) for g in groups), len(groups)),
    }
