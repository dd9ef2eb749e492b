"""Markdown tables and a bar chart of `compute_metrics` / `paired_comparison` results.

The table functions return text; the writers put files on disk atomically (a temporary file
beside the target, then os.replace), so a reader never sees half a report.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medrl.evaluation.metrics import Estimate, PairedResult
from medrl.evaluation.power import mcnemar_mde, min_discordant
from medrl.utils.io import write_atomic

# Display names of the metrics a chart or table may show; other Estimate keys show as is.
METRIC_NAMES = {
    "accuracy": "accuracy",
    "format_rate": "format compliance",
    "valid_json_rate": "valid JSON",
    "schema_pass_rate": "schema pass",
    "accuracy_on_schema": "accuracy on schema-valid",
    "parse_fail_rate": "parse failures",
    "truncated_rate": "truncated",
    "majority_baseline": "majority baseline",
    "chance_corrected_accuracy": "chance-corrected accuracy",
    "macro_f1": "macro-F1",
    "accuracy_norm": "accuracy (length-normalized)",
    "sample_accuracy": "single-sample accuracy",
    "pass_at_k": "pass@k",
    "exact_match": "exact match",
    "token_f1": "token F1",
    "rouge_l": "ROUGE-L",
    "bertscore_f1": "BERTScore F1",
}
# Open-ended results (medrl/evaluation/text_metrics.py) carry these instead of accuracy.
TEXT_METRICS = ("exact_match", "token_f1", "rouge_l", "bertscore_f1")
MDE_HEADER = "min. detectable diff (80% power)"
MDE_NOTE = (
    "Min. detectable diff: the smallest |B - A| that McNemar's test would detect with 80% "
    "power at the 5% level (two-sided), at this n and the observed discordance (b + c) / n "
    "(Connor 1987); none where too few items are discordant for any difference to be "
    "detectable. `python -m medrl.power` sizes a study before it runs."
)


def mde_text(n: int, discordant: int) -> str:
    """The minimum detectable difference of a paired comparison of n items with `discordant`
    (b + c) discordant ones, as a table cell: "0.088", or "none (needs b + c >= 8)" when the
    models agree too often for any difference to be detectable (`mcnemar_mde` is inf)."""
    mde = mcnemar_mde(n, discordant / n)
    if math.isfinite(mde):
        return f"{mde:.3f}"
    needed = min_discordant(n)
    return f"none (needs b + c >= {needed})" if needed <= n else f"none at n = {n}"


def is_open_ended(results: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when the results score open-ended answers (text metrics, no accuracy)."""
    return any("token_f1" in metrics for metrics in results.values())


def is_forced_choice(results: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when the results score forced choices (evaluation.mode=choice_logprob)."""
    return any("accuracy_norm" in metrics for metrics in results.values())


def chart_metrics(results: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """What the comparison chart shows: the text metrics present for open-ended results,
    accuracy raw and length-normalized for forced choices, else accuracy and format
    compliance."""
    if is_forced_choice(results):
        return ("accuracy", "accuracy_norm")
    if is_open_ended(results):
        first = next(iter(results.values()))
        judged = [m for m in first if m.startswith("judge_") and not m.endswith("_fail_rate")]
        return tuple(m for m in TEXT_METRICS if m in first) + tuple(judged)
    return ("accuracy", "format_rate")


def metric_name(key: str) -> str:
    """The display name of a metric key ("token_f1" -> "token F1", "judge_correctness" ->
    "judge correctness")."""
    return METRIC_NAMES.get(key, key.replace("_", " "))


def text_metrics_table_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Open-ended results: one row per model with n, each text metric [95% CI], format
    compliance [95% CI] and mean tokens."""
    shown = chart_metrics(results)
    header = ["model", "n", *(f"{metric_name(m)} [95% CI]" for m in shown)]
    header += ["format compliance [95% CI]", "mean tokens"]
    align = ["---", "---:", *["---"] * (len(shown) + 1), "---:"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for name, metrics in results.items():
        cells = [name, str(metrics["n"]), *(_with_ci(metrics[m]) for m in shown)]
        cells += [_with_ci(metrics["format_rate"]), _number(metrics["mean_tokens"].value, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def metrics_table_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per model (in `results` order): n, accuracy [95% CI] and its half-width
    (high - low) / 2, format compliance [95% CI], parse-fail rate, mean tokens; then a line
    with the majority-class baseline."""
    if not results:
        raise ValueError("no results to tabulate")
    lines = [
        "| model | n | accuracy [95% CI] | accuracy ± (half-width) | format compliance [95% CI] "
        "| parse-fail rate | mean tokens |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for name, metrics in results.items():
        accuracy = metrics["accuracy"]
        cells = [
            name,
            str(metrics["n"]),
            _with_ci(accuracy),
            _number((accuracy.high - accuracy.low) / 2),
            _with_ci(metrics["format_rate"]),
            _number(metrics["parse_fail_rate"].value),
            _number(metrics["mean_tokens"].value, digits=1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _baseline_line(results)]
    return "\n".join(lines) + "\n"


def choice_table_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Forced-choice results: one row per model with n, accuracy (raw argmax) and accuracy_norm
    (argmax per unit of length), each [95% Wilson CI] with its half-width; then a line with the
    majority-class baseline."""
    lines = [
        "| model | n | accuracy [95% CI] | accuracy ± (half-width) "
        "| accuracy_norm [95% CI] | accuracy_norm ± (half-width) |",
        "| --- | ---: | --- | ---: | --- | ---: |",
    ]
    for name, metrics in results.items():
        raw, norm = metrics["accuracy"], metrics["accuracy_norm"]
        cells = [name, str(metrics["n"]), _with_ci(raw), _half_width(raw)]
        cells += [_with_ci(norm), _half_width(norm)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _baseline_line(results)]
    return "\n".join(lines) + "\n"


def paired_table_markdown(pairs: Mapping[str, PairedResult]) -> str:
    """One row per comparison (e.g. "base -> sft"): n, both accuracies, B - A [95% paired
    bootstrap CI], the discordant counts b and c, McNemar's exact p-value and the minimum
    detectable difference at n and (b + c) / n (`mde_text`); then a line saying what that is."""
    if not pairs:
        raise ValueError("no comparisons to tabulate")
    lines = [
        "| comparison | n | acc A | acc B | B - A [95% CI] | b: A right, B wrong "
        f"| c: A wrong, B right | McNemar p | {MDE_HEADER} |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, pair in pairs.items():
        diff = f"{pair.diff:+.3f} [{pair.diff_low:+.3f}, {pair.diff_high:+.3f}]"
        cells = [
            name,
            str(pair.n),
            _number(pair.acc_a),
            _number(pair.acc_b),
            diff,
            str(pair.b),
            str(pair.c),
            _p_value(pair.p_value),
            mde_text(pair.n, pair.b + pair.c),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", MDE_NOTE]
    return "\n".join(lines) + "\n"


def sampling_table_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """For sampled evaluation (k > 1): one row per model with k, the majority-vote accuracy
    (the headline), mean single-sample accuracy, and pass@k."""
    sampled = {name: m for name, m in results.items() if "pass_at_k" in m}
    if not sampled:
        raise ValueError("no sampled results (pass_at_k) to tabulate")
    lines = [
        "| model | k | maj@k accuracy [95% CI] | single-sample accuracy [95% CI] "
        "| pass@k [95% CI] |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for name, m in sampled.items():
        cells = [
            name,
            str(m["samples_per_item"]),
            _with_ci(m["accuracy"]),
            _with_ci(m["sample_accuracy"]),
            _with_ci(m["pass_at_k"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def source_table_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """For items from several datasets (a mixture): one row per model and source with n and
    the accuracy with its Wilson interval."""
    lines = ["| model | source | n | accuracy [95% CI] |", "| --- | --- | ---: | --- |"]
    for name, m in results.items():
        for source, acc in m.get("per_source", {}).items():
            interval = f"{_number(acc.accuracy)} [{_number(acc.low)}, {_number(acc.high)}]"
            lines.append(f"| {name} | {source} | {acc.n} | {interval} |")
    return "\n".join(lines) + "\n"


def write_markdown_report(
    path: str | os.PathLike[str],
    results: Mapping[str, Mapping[str, Any]],
    pairs: Mapping[str, PairedResult] | None = None,
    checkpoints: Mapping[str, str] | None = None,
    method: str | None = None,
) -> Path:
    """The metrics table, the sampling table when results were sampled (k > 1; the metrics and
    paired tables then score the majority vote), accuracy per source for a mixture's items, and
    the paired table when `pairs` is non-empty, in one markdown file; then, when given,
    `checkpoints` (model -> which training step its weights are and why). `method`, when given,
    is a paragraph under the metrics table saying how answers were obtained (forced choice:
    the settings that define the scores)."""
    text = _report_text(results, pairs, method)
    if checkpoints:
        lines = [f"- {name}: {note}" for name, note in checkpoints.items()]
        text += "\n## Checkpoints\n\n" + "\n".join(lines) + "\n"
    return write_atomic(path, text.encode("utf-8"))


def _report_text(
    results: Mapping[str, Mapping[str, Any]],
    pairs: Mapping[str, PairedResult] | None,
    method: str | None = None,
) -> str:
    extra = f"\n{method}\n" if method else ""
    if is_forced_choice(results):
        text = "## Metrics\n\n" + choice_table_markdown(results) + _CHOICE_NOTE + extra
        if any(m.get("per_source") for m in results.values()):
            text += "\n## Accuracy per source\n\n" + source_table_markdown(results)
        if pairs:
            text += "\n## Paired comparisons\n\n" + paired_table_markdown(pairs)
        return text
    if is_open_ended(results):
        text = "## Metrics\n\n" + text_metrics_table_markdown(results) + _TEXT_NOTE
        if any(m.startswith("judge_") for m in chart_metrics(results)):
            text += _JUDGE_NOTE
        if pairs:
            text += "\n## Paired comparisons\n\n" + paired_table_markdown(pairs)
        return text
    text = "## Metrics\n\n" + metrics_table_markdown(results) + extra
    if any("pass_at_k" in m for m in results.values()):
        text += (
            "\nSampled evaluation: accuracy and the paired tests score the majority vote of "
            "the k samples per item; format compliance, parse failures, truncation and tokens "
            "are means over all k samples.\n\n## Sampling\n\n" + sampling_table_markdown(results)
        )
    if any(m.get("per_source") for m in results.values()):
        text += "\n## Accuracy per source\n\n" + source_table_markdown(results)
    if pairs:
        text += "\n## Paired comparisons\n\n" + paired_table_markdown(pairs)
    return text


_CHOICE_NOTE = (
    "\nForced choice (evaluation.mode=choice_logprob), as lm-evaluation-harness scores multiple "
    "choice: after the prompt, each option's continuation is scored by its summed token "
    "log-likelihood. accuracy: the highest sum (lm-eval's acc; the answer in predictions.jsonl "
    "and the paired tests); accuracy_norm: the highest sum per unit of the continuation's "
    "length (lm-eval's acc_norm: characters; acc_bytes: UTF-8 bytes). Nothing is generated, so "
    "format compliance, parse failures and tokens do not apply.\n"
)

_JUDGE_NOTE = (
    "\nJudge scores: the run's judge grades each parsed answer under the rubric named (1-5, "
    "mapped to [0, 1]); an unparsed answer scores 0; a failed judgement is left out of the mean "
    "and counted in judge_<rubric>_fail_rate (summary.json).\n"
)

_TEXT_NOTE = (
    "\nOpen-ended answers, each scored against its record's reference text and averaged over "
    "items (95% percentile bootstrap over items): SQuAD exact match and token F1, ROUGE-L "
    "F-measure, BERTScore F1 (raw, not rescaled); an answer that did not parse scores 0.\n"
)


# ---- several benchmarks in one evaluation (evaluation.benchmarks) ----------------------------


@dataclass(frozen=True)
class BenchmarkResult:
    """One benchmark of a multi-benchmark evaluation: its dataset's display title, the
    metrics of each model on its eval pool, and its paired comparisons."""

    title: str
    results: Mapping[str, Mapping[str, Any]]
    pairs: Mapping[str, PairedResult]


def headline_metric(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The one number per model a side-by-side table shows: accuracy for labelled answers
    (generated or forced choice: the raw argmax), token F1 for open-ended ones."""
    return "token_f1" if is_open_ended(results) else "accuracy"


def benchmark_table_markdown(benchmarks: Mapping[str, BenchmarkResult]) -> str:
    """Models side by side on every benchmark: one row per model (in evaluation order), one
    column per benchmark with its headline metric [95% CI]; then each benchmark's n and, for
    labelled answers, its own majority-class baseline."""
    if not benchmarks:
        raise ValueError("no benchmarks to tabulate")
    models = list(dict.fromkeys(m for b in benchmarks.values() for m in b.results))
    columns = [
        f"{b.title} {metric_name(headline_metric(b.results))} [95% CI]" for b in benchmarks.values()
    ]
    lines = [
        "| model | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for model in models:
        cells = [
            _headline_cell(b.results.get(model), headline_metric(b.results))
            for b in benchmarks.values()
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append(
        "| n (items) | " + " | ".join(_n_cell(b.results) for b in benchmarks.values()) + " |"
    )
    if not any(is_open_ended(b.results) for b in benchmarks.values()):
        cells = [_baseline_cell(b.results) for b in benchmarks.values()]
        lines.append("| majority baseline | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_benchmark_report(
    path: str | os.PathLike[str],
    benchmarks: Mapping[str, BenchmarkResult],
    checkpoints: Mapping[str, str] | None = None,
    method: str | None = None,
) -> Path:
    """eval/report.md of a multi-benchmark evaluation: the side-by-side table, then one
    section per benchmark (its metrics table with intervals and its own majority baseline,
    its paired comparisons with their minimum detectable differences: the single-dataset
    report one heading level down), then `checkpoints` (model -> which training step its
    weights are and why). `method`, when given, says how answers were obtained."""
    names = ", ".join(f"`{name}`" for name in benchmarks)
    text = "## Benchmarks\n\n" + benchmark_table_markdown(benchmarks)
    text += (
        f"\nEvery model on each benchmark's eval pool ({names}), with the same output format, "
        "prompts and decoding; 95% intervals (Wilson for proportions, bootstrap otherwise). "
        "Each section below has the benchmark's full metrics, its majority baseline and its "
        "paired comparisons; eval/<benchmark>/ holds its predictions, report.md, summary.json "
        "and chart.\n"
    )
    text += f"\n{method}\n" if method else ""
    for name, benchmark in benchmarks.items():
        section = _report_text(benchmark.results, benchmark.pairs)
        text += f"\n## {benchmark.title} (`{name}`)\n\n" + demoted(section)
    if checkpoints:
        lines = [f"- {name}: {note}" for name, note in checkpoints.items()]
        text += "\n## Checkpoints\n\n" + "\n".join(lines) + "\n"
    return write_atomic(path, text.encode("utf-8"))


def demoted(markdown: str) -> str:
    """Markdown with every heading one level down (## -> ###), to nest it in a section."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.MULTILINE)


def benchmark_chart(
    benchmarks: Mapping[str, BenchmarkResult], path: str | os.PathLike[str]
) -> Path:
    """A PNG of grouped bars, one group per benchmark and one bar per model, each benchmark's
    headline metric with its asymmetric 95% error bars and, for labelled answers, a dashed
    segment at that benchmark's own majority baseline."""
    if not benchmarks:
        raise ValueError("no benchmarks to plot")
    models = list(dict.fromkeys(m for b in benchmarks.values() for m in b.results))
    metrics = {name: headline_metric(b.results) for name, b in benchmarks.items()}
    for name, b in benchmarks.items():
        for model, model_metrics in b.results.items():
            _check_plottable(f"{model} on {name}", model_metrics, [metrics[name]])
    x = np.arange(len(benchmarks))  # [K]
    width = 0.8 / len(models)
    fig = Figure(
        figsize=(max(4.0, 1.2 * len(benchmarks) * len(models) + 2.0), 4.0), layout="constrained"
    )
    ax = fig.add_subplot()
    for j, model in enumerate(models):
        estimates = [
            b.results[model][metrics[n]] if model in b.results else None
            for n, b in benchmarks.items()
        ]
        values = np.array([np.nan if e is None else e.value for e in estimates])  # [K]
        below = np.array([0.0 if e is None else _gap(e.value, e.low) for e in estimates])  # [K]
        above = np.array([0.0 if e is None else _gap(e.high, e.value) for e in estimates])  # [K]
        offset = (j - (len(models) - 1) / 2) * width
        ax.bar(
            x + offset,
            np.nan_to_num(values),
            width,
            yerr=np.stack([below, above]),
            capsize=3,
            label=model,
        )
    baselines = [_baseline_value(b.results) for b in benchmarks.values()]
    if any(value is not None for value in baselines):
        for k, value in enumerate(baselines):
            if value is not None:
                ax.hlines(
                    value,
                    x[k] - 0.45,
                    x[k] + 0.45,
                    colors="0.3",
                    linestyles="dashed",
                    linewidth=1.2,
                )
        ax.plot([], [], color="0.3", linestyle="--", label="majority baseline")
    ax.set_xticks(x, [f"{b.title}\n(n = {_n_cell(b.results)})" for b in benchmarks.values()])
    ax.set_ylabel(" / ".join(dict.fromkeys(metric_name(m) for m in metrics.values())) + " (95% CI)")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"Evaluation on {len(benchmarks)} benchmarks")
    ax.legend(loc="upper left", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return write_atomic(path, buffer.getvalue())


def _headline_cell(metrics: Mapping[str, Any] | None, metric: str) -> str:
    return "n/a" if metrics is None or metric not in metrics else _with_ci(metrics[metric])


def _n_cell(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The benchmark's item count (one number when every model scored the same items)."""
    ns = list(dict.fromkeys(str(m["n"]) for m in results.values()))
    return ns[0] if len(ns) == 1 else " / ".join(ns)


def _baseline_value(results: Mapping[str, Mapping[str, Any]]) -> float | None:
    first = next(iter(results.values()), {})
    return first["majority_baseline"].value if "majority_baseline" in first else None


def _baseline_cell(results: Mapping[str, Mapping[str, Any]]) -> str:
    first = next(iter(results.values()), {})
    if "majority_baseline" not in first:
        return "n/a"
    return f'{first["majority_baseline"].value:.3f} ("{first["majority_label"]}")'


def bar_chart(
    results: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    metrics: Sequence[str] = ("accuracy", "format_rate"),
) -> Path:
    """A PNG of grouped bars (one group per model, one bar per metric) with asymmetric 95% error
    bars, a dashed line at the majority-class baseline (closed answers), and n in the title."""
    if not results:
        raise ValueError("no results to plot")
    for name, model_metrics in results.items():
        _check_plottable(name, model_metrics, metrics)
    models = list(results)
    x = np.arange(len(models))  # [M]
    width = 0.8 / len(metrics)
    fig = Figure(figsize=(max(4.0, 1.6 * len(models) + 2.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    for j, metric in enumerate(metrics):
        estimates = [results[m][metric] for m in models]
        values = np.array([e.value for e in estimates])  # [M]
        below = np.array([_gap(e.value, e.low) for e in estimates])  # [M]
        above = np.array([_gap(e.high, e.value) for e in estimates])  # [M]
        offset = (j - (len(metrics) - 1) / 2) * width
        ax.bar(
            x + offset,
            np.nan_to_num(values),
            width,
            yerr=np.stack([below, above]),  # [2, M]
            capsize=3,
            label=METRIC_NAMES.get(metric, metric),
        )
    _draw_baseline(ax, results, models, x)
    ax.set_xticks(x, models)
    ax.set_xlabel("model")
    ax.set_ylabel("value (95% CI)")
    tops = [results[m][k].high for m in models for k in metrics]
    ax.set_ylim(0.0, max([1.0, *(t for t in tops if math.isfinite(t))]) * 1.05)  # rates fit
    ax.set_title(_n_title(results))
    ax.legend(loc="upper left", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return write_atomic(path, buffer.getvalue())


# ---- helpers ----------------------------------------------------------------------------------


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _with_ci(estimate: Estimate) -> str:
    if math.isnan(estimate.value):
        return "n/a"
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _half_width(estimate: Estimate) -> str:
    return _number((estimate.high - estimate.low) / 2)


def _p_value(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _baseline_line(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One baseline when every model was scored on the same gold answers, else one per model."""
    parts = {
        name: f'{m["majority_baseline"].value:.3f} (always "{m["majority_label"]}")'
        for name, m in results.items()
    }
    if len(set(parts.values())) == 1:
        return f"Majority-class baseline: {next(iter(parts.values()))}."
    return "Majority-class baseline: " + "; ".join(f"{k} {v}" for k, v in parts.items()) + "."


def _check_plottable(name: str, model_metrics: Mapping[str, Any], metrics: Sequence[str]) -> None:
    valid = sorted(k for k, v in model_metrics.items() if isinstance(v, Estimate))
    for metric in metrics:
        if not isinstance(model_metrics.get(metric), Estimate):
            raise ValueError(f"cannot plot {metric!r} of {name!r}; valid metrics: {valid}")


def _gap(outer: float, inner: float) -> float:
    """Error-bar length; 0 where the interval is undefined."""
    gap = outer - inner
    return 0.0 if math.isnan(gap) else max(0.0, gap)


def _draw_baseline(ax: Any, results: Mapping[str, Mapping[str, Any]], models, x) -> None:
    if any("majority_baseline" not in results[m] for m in models):
        return  # open-ended results have no majority class
    baselines = [results[m]["majority_baseline"].value for m in models]
    style = {"colors": "0.3", "linestyles": "dashed", "linewidth": 1.2}
    if len(set(baselines)) == 1:
        ax.axhline(baselines[0], color="0.3", linestyle="--", linewidth=1.2)
    else:  # different items per model: one dashed segment over each model's group
        ax.hlines(baselines, x - 0.45, x + 0.45, **style)
    labels = sorted({results[m]["majority_label"] for m in models})
    ax.plot([], [], color="0.3", linestyle="--", label=f"majority baseline ({', '.join(labels)})")


def _n_title(results: Mapping[str, Mapping[str, Any]]) -> str:
    ns = {name: m["n"] for name, m in results.items()}
    if len(set(ns.values())) == 1:
        return f"Evaluation (n = {next(iter(ns.values()))} items)"
    return "Evaluation (n = " + ", ".join(f"{k} {v}" for k, v in ns.items()) + ")"
