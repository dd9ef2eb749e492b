"""The stage's own record of training: the selection of its weights and the validation curve.

Both come from the checkpoint (manifest.json's `selection`, validation.jsonl; see
medrl/publishing/evidence.py) and are rendered as written: a table with 95% intervals, and a
PNG of the curve once there are two validations.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

VAL_CURVE = "val_curve.png"


def followed_metric(rows: Sequence[Mapping[str, Any]], selection: Mapping[str, Any]) -> str:
    """The val metric the stage followed (the selection's, without its val/ prefix); for a
    checkpoint without a selection record, accuracy when the rows have it (closed formats),
    else token_f1 (open-ended ones: medrl.evaluation.validation's defaults)."""
    metric = str(selection.get("metric") or "")
    if metric:
        return metric.removeprefix("val/")
    return "accuracy" if any("accuracy" in row for row in rows) else "token_f1"


def selection_section(selection: Mapping[str, Any]) -> str:
    """The selection record as a list (which step, by which metric, why), or its absence."""
    if not selection:
        return (
            "## Checkpoint selection\n\nNo selection record in manifest.json: the weights are "
            "the stage's final ones.\n"
        )
    lines = ["## Checkpoint selection\n"]
    lines += [f"- {key}: `{_show(value)}`" for key, value in selection.items()]
    return "\n".join(lines) + "\n"


def validation_section(rows: Sequence[Mapping[str, Any]], selection: Mapping[str, Any]) -> str:
    """The validation table, and the curve's image once there are two rows."""
    if not rows:
        return "## Validation during training\n\nNo validation.jsonl in the checkpoint.\n"
    marked = "; the selected step is marked" if selection.get("step") is not None else ""
    text = (
        f"## Validation during training\n\nOne row per validation (95% intervals){marked}.\n\n"
        + validation_table(rows, selection.get("step"), followed_metric(rows, selection))
    )
    if len(rows) >= 2:
        text += f"\n![validation curve]({VAL_CURVE})\n"
    return text


def validation_table(
    rows: Sequence[Mapping[str, Any]], selected: Any = None, metric: str = "accuracy"
) -> str:
    """step | n | <metric> [95% CI] | format rate [95% CI] | mean tokens."""
    lines = [
        f"| step | n | {metric} [95% CI] | format rate [95% CI] | mean tokens |",
        "| ---: | ---: | --- | --- | ---: |",
    ]
    for row in rows:
        step = f"{row.get('step', '?')}" + (" (selected)" if row.get("step") == selected else "")
        cells = [
            step,
            _show(row.get("n", "")),
            _with_ci(row, metric),
            _with_ci(row, "format_rate"),
            _number(row.get("mean_tokens"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def val_curve_png(rows: Sequence[Mapping[str, Any]], selection: Mapping[str, Any]) -> bytes:
    """The followed metric with its 95% band and the format rate against the step; the selected
    step dashed."""
    steps = [row.get("step", i) for i, row in enumerate(rows)]
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    keys = dict.fromkeys([followed_metric(rows, selection), "format_rate"])
    shown: list[float] = []
    for key in keys:
        label = key.replace("_", " ")
        values = [_float(row.get(key)) for row in rows]
        shown += values
        (line,) = ax.plot(steps, values, marker="o", label=label)
        low = [_float(row.get(f"{key}_ci_low")) for row in rows]
        high = [_float(row.get(f"{key}_ci_high")) for row in rows]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
    if selection.get("step") is not None:
        ax.axvline(selection["step"], color="grey", linestyle="--", label="selected")
    ax.set_xlabel("step")
    ax.set_ylabel("validation (95% CI)")
    if all(0.0 <= v <= 1.0 for v in shown if not math.isnan(v)):  # rates: a common scale
        ax.set_ylim(0.0, 1.05)
    ax.legend(loc="lower right", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _with_ci(row: Mapping[str, Any], key: str) -> str:
    value = _float(row.get(key))
    if math.isnan(value):
        return "n/a"
    low, high = _float(row.get(f"{key}_ci_low")), _float(row.get(f"{key}_ci_high"))
    interval = "" if math.isnan(low) or math.isnan(high) else f" [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}{interval}"


def _number(value: Any, digits: int = 3) -> str:
    number = _float(value)
    return "n/a" if math.isnan(number) else f"{number:.{digits}f}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
