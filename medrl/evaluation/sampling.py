"""Sampled evaluation: k completions per item, reduced to one answer per item plus k-metrics.

With `evaluation.num_samples = k > 1` every item has predictions with sample = 0..k-1. The
headline metrics (and paired comparisons) use one prediction per item, the majority vote
(maj@k, self-consistency, Wang et al. 2023); `sampling_metrics` adds what only k samples show:
the accuracy of a single sample averaged over the k draws, and pass@k.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from medrl.evaluation.metrics import Estimate, bootstrap_mean, proportion
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


def sampling_metrics(
    predictions: Sequence[Prediction], n_boot: int = 2000, seed: int = 0
) -> dict[str, Estimate | int]:
    """Metrics over k samples per item; intervals treat items (not samples) as the unit.

    Keys:
      samples_per_item    k (int)
      sample_accuracy     mean over items of the item's share of correct samples: the expected
                          accuracy of one sampled answer (bootstrap over items)
      sample_format_rate  the same for format compliance (bootstrap over items)
      pass_at_k           share of items with at least one correct sample (Wilson)
    """
    groups = list(group_by_item(predictions).values())
    if not groups:
        raise ValueError("cannot compute sampling metrics of zero predictions")
    correct = np.array([[p.correct for p in g] for g in groups], dtype=float).mean(axis=1)  # [n]
    formatted = np.array([[p.format_ok for p in g] for g in groups], dtype=float).mean(axis=1)

    return {
        "samples_per_item": len(groups[0]),
        "sample_accuracy": bootstrap_mean(correct, n_boot, seed),
        "sample_format_rate": bootstrap_mean(formatted, n_boot, seed),
        "pass_at_k": proportion(sum(any(p.correct for p in g) for g in groups), len(groups)),
    }
