"""Per-step summaries: median and spread (min-max, interquartile range) and ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """n values: median, min, max, and the quartiles q1, q3 (inclusive method: the quartiles
    of 1, 2, 3, 4, 10 are 2 and 4)."""

    n: int
    median: float
    min: float
    max: float
    q1: float
    q3: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary | None:
    """The summary of `values`; None when there are none."""
    values = [float(v) for v in values]
    if not values:
        return None
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Summary(
        n=len(values),
        median=statistics.median(values),
        min=min(values),
        max=max(values),
        q1=q1,
        q3=q3,
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator; None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def measured_steps(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured (post-warm-up) step records of every successful run, in run order."""
    return [s for run in runs if not run.get("failed") for s in run["steps"] if s["measured"]]


def system_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One system's figures over all its runs: step seconds, phases, counters, memory.

    Phase shares are sums over the measured steps divided by the summed step time, so the
    shares of a step's phases add up to 1.
    """
    steps = measured_steps(runs)
    ok = [run for run in runs if not run.get("failed")]
    seconds = [s["seconds"] for s in steps]
    total = sum(seconds)
    phase_names = sorted({name for s in steps for name in s["phases"]})
    counter_names = sorted({name for s in steps for name in s["counters"]})
    return {
        "runs": len(runs),
        "failed_runs": [run.get("error", "") for run in runs if run.get("failed")],
        "step_seconds": seconds,
        "seconds": summarize(seconds),
        "phases": {n: summarize([s["phases"].get(n, 0.0) for s in steps]) for n in phase_names},
        "phase_shares": {
            n: (sum(s["phases"].get(n, 0.0) for s in steps) / total if total else None)
            for n in phase_names
        },
        "counters": {
            n: summarize([s["counters"].get(n, 0.0) for s in steps]) for n in counter_names
        },
        "tokens_per_second": summarize(
            [
                s["counters"]["completion_tokens"] / s["seconds"]
                for s in steps
                if s["seconds"] > 0 and "completion_tokens" in s["counters"]
            ]
        ),
        # SFT: the assistant tokens one step trains on (the same batch every step).
        "trained_tokens_per_step": next(
            (run["assistant_tokens_per_step"] for run in ok if "assistant_tokens_per_step" in run),
            None,
        ),
        # One decode forward (a token for every row still writing): decode seconds over the
        # forwards after the prefill, which made the first token (decode_width - 1).
        "decode_ms_per_forward": summarize(
            [
                1000 * s["phases"]["decode"] / (s["counters"]["decode_width"] - 1)
                for s in steps
                if s["counters"].get("decode_width", 0) > 1 and "decode" in s["phases"]
            ]
        ),
        # What medrl's engine chose by measurement in each run (cpu_linear=auto, compiled
        # decode), every distinct line once, in the order the runs reported them.
        "engine_decisions": list(
            dict.fromkeys(line for run in ok for line in run.get("engine_decisions", []))
        ),
        "decode_flops_per_row": max(
            (run["decode_flops_per_row"] for run in ok if "decode_flops_per_row" in run),
            default=None,
        ),
        "decode_weight_bytes": max(
            (run["decode_weight_bytes"] for run in ok if "decode_weight_bytes" in run),
            default=None,
        ),
        "peak_rss_bytes": max((run["peak_rss_bytes"] for run in ok), default=None),
        "rss_after_load_bytes": max(
            (run.get("rss_after_load_bytes") or 0 for run in ok), default=None
        ),
        "cuda_peak_allocated_bytes": max(
            (run["cuda_peak_allocated_bytes"] for run in ok if "cuda_peak_allocated_bytes" in run),
            default=None,
        ),
    }


def compute_floor_ms(
    flops_per_row: float | None, rows: float | None, flops_per_s: float | None
) -> float | None:
    """The least time a decode forward of `rows` rows can take on the products alone, in ms:
    its FLOPs at the measured dense matrix product rate; None when any is unknown."""
    if not flops_per_row or not rows or not flops_per_s:
        return None
    return 1000 * flops_per_row * rows / flops_per_s


def decode_floor_ms(weight_bytes: float | None, bandwidth: float | None) -> float | None:
    """The least time a decode forward can take, in ms: its weights read once at the measured
    memory read bandwidth (bytes / (bytes/s)); None when either is unknown."""
    if not weight_bytes or not bandwidth:
        return None
    return 1000 * weight_bytes / bandwidth
