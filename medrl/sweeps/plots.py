"""PNG plots of a sweep's group means: a heatmap (two swept keys), a line over one key, or bars.

Drawn on `matplotlib.figure.Figure` objects, never pyplot, so plotting holds no global state and
works in Hydra callbacks and tests without a display. Inputs are plain lists and arrays; the
choice of plot for a sweep lives in `medrl.sweeps.aggregate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from medrl.utils.io import save_png  # noqa: F401 (plots.save_png: the sweeps' writer)

# A swept key whose numeric values span this ratio or more is drawn on a log axis (lr, beta).
_LOG_SPAN = 100.0


def numeric_values(values: Sequence[str]) -> list[float] | None:
    """The values as floats when every one parses as a number, else None."""
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def ordered_values(values: Sequence[str]) -> list[str]:
    """Distinct values, sorted numerically when all are numbers, else in order of appearance.

    Appearance order keeps the order the sweep was written in (model sizes listed small to
    large), which an alphabetical sort would scramble ("qwen3_0.6b" > "qwen3_1.7b" > ...).
    """
    distinct = list(dict.fromkeys(values))
    numbers = numeric_values(distinct)
    if numbers is None:
        return distinct
    return [v for _, v in sorted(zip(numbers, distinct, strict=True), key=lambda pair: pair[0])]


def heatmap(
    means: np.ndarray,
    counts: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_key: str,
    col_key: str,
    metric: str,
) -> Figure:
    """Mean of `metric` per cell (rows: row_key values, columns: col_key values), each cell
    annotated with its mean and number of seeds; cells without a value are blank ("n/a")."""
    fig = Figure(
        figsize=(1.4 * len(col_labels) + 2.5, 0.9 * len(row_labels) + 1.8), layout="constrained"
    )
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(means), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels))
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    ax.set_xlabel(col_key)
    ax.set_ylabel(row_key)
    ax.set_title(f"mean {metric} across seeds")
    finite = means[np.isfinite(means)]
    middle = float(finite.min() + finite.max()) / 2 if finite.size else 0.0
    for r in range(means.shape[0]):
        for c in range(means.shape[1]):
            value = means[r, c]
            text = f"{value:.3f}" if math.isfinite(value) else "n/a"
            color = "black" if math.isfinite(value) and value > middle else "white"
            ax.text(c, r, f"{text}\nn={int(counts[r, c])}", ha="center", va="center", color=color)
    if not finite.size:  # nothing drawn: a white background would hide the white labels
        ax.set_facecolor("lightgray")
    return fig


def line_plot(
    labels: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    key: str,
    metric: str,
) -> Figure:
    """Mean of `metric` over the values of one swept key with 95% error bars (none where the
    interval is undefined). Numeric values sit at their numbers (log axis when they span two
    decades or more); other values are evenly spaced in the given order."""
    numbers = numeric_values(labels)
    x = np.arange(len(labels), dtype=float) if numbers is None else np.asarray(numbers)  # [K]
    fig = Figure(figsize=(max(5.5, 0.9 * len(labels) + 2.0), 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(x, means, yerr=_error_bars(means, lows, highs), marker="o", capsize=4)
    if numbers is None:
        ax.set_xticks(x, labels=list(labels))
    elif min(numbers) > 0 and max(numbers) / min(numbers) >= _LOG_SPAN:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean across seeds, 95% t interval", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def bar_plot(
    labels: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    metric: str,
) -> Figure:
    """One horizontal bar per group (top to bottom in the given order) with 95% error bars."""
    y = np.arange(len(labels))  # [K]
    fig = Figure(figsize=(7.0, 0.45 * len(labels) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(y, means, xerr=_error_bars(means, lows, highs), capsize=3, color="tab:blue")
    ax.set_yticks(y, labels=list(labels))
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"{metric}: mean across seeds, 95% t interval", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def curve_plot(
    series: Sequence[tuple[str, Sequence[int], Sequence[float], Sequence[float], Sequence[float]]],
    metric: str,
) -> Figure:
    """One line per group over training steps: (label, steps, means, lows, highs) each, the 95%
    band shaded where it is defined (two seeds or more at that step)."""
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for label, steps, means, lows, highs in series:
        x = np.asarray(steps, dtype=float)  # [S]
        (line,) = ax.plot(x, means, marker="o", markersize=3, label=label)
        low, high = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)  # [S] each
        defined = np.isfinite(low) & np.isfinite(high)
        if defined.any():
            ax.fill_between(x, low, high, where=defined, alpha=0.2, color=line.get_color())
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean across seeds, 95% t band", fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return fig


def _error_bars(
    means: Sequence[float], lows: Sequence[float], highs: Sequence[float]
) -> np.ndarray:
    """[2, K] distances below and above each mean; 0 where the interval is undefined."""
    m, lo, hi = (np.asarray(v, dtype=float) for v in (means, lows, highs))  # each [K]
    return np.nan_to_num(np.stack([m - lo, hi - m]), nan=0.0)  # [2, K]
