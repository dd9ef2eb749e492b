"""Learning curves of a sweep: per group, a metric over training steps, the mean across seeds
with its 95% t band.

A curve is named `<stage>/<metric>` (the `aggregate.curves` list): `grpo/val/accuracy`,
`sft/val/format_rate`, `grpo/reward/total`. Each job's points come from its run folder:
- val/ metrics from validation/<stage>.jsonl (written by validation during training, whatever
  the loggers: medrl.stages.validation);
- every other metric from the CSV logger's csv/<stage>*/metrics.csv (a resumed stage logs to
  <stage>_resumed*: read in order, a later file's value replacing an earlier one at a step).
Groups are the sweep's (jobs that differ only in seed keys); at each step the band is the t
interval over the seeds that logged that step (none with one seed).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrl.sweeps import plots
from medrl.sweeps.collect import Job
from medrl.sweeps.stats import t_interval
from medrl.utils.io import write_atomic

VAL_PREFIX = "val/"


@dataclass(frozen=True)
class GroupCurve:
    """One group's curve: at each step the mean across seeds, its 95% t interval (nan with
    fewer than two seeds at that step) and the number of seeds."""

    label: str
    steps: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: tuple[int, ...]


def parse_curve(name: str) -> tuple[str, str]:
    """`grpo/val/accuracy` -> ("grpo", "val/accuracy"): the stage, then the metric."""
    stage, _, metric = name.partition("/")
    if not stage or not metric:
        raise ValueError(
            f"aggregate.curves entry {name!r}: expected <stage>/<metric>, e.g. grpo/val/accuracy"
        )
    return stage, metric


def job_curve(job_dir: Path, stage: str, metric: str) -> dict[int, float]:
    """{step: value} of `metric` in one job's stage (empty when the job did not log it)."""
    if metric.startswith(VAL_PREFIX):
        return _validation_points(job_dir / "validation" / f"{stage}.jsonl", metric)
    points: dict[int, float] = {}
    for path in sorted((job_dir / "csv").glob(f"{stage}*/metrics.csv")):
        if path.parent.name == stage or path.parent.name.startswith(f"{stage}_resumed"):
            points.update(_csv_points(path, metric))
    return points


def _validation_points(path: Path, metric: str) -> dict[int, float]:
    if not path.is_file():
        return {}
    key = metric.removeprefix(VAL_PREFIX)
    points = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        value = row.get(key)
        if value is not None:
            points[int(row["step"])] = float(value)
    return points


def _csv_points(path: Path, metric: str) -> dict[int, float]:
    points = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            value, step = row.get(metric), row.get("step")
            if value not in (None, "") and step not in (None, ""):
                points[int(float(step))] = float(value)
    return points


def group_curve(label: str, curves: Sequence[Mapping[int, float]]) -> GroupCurve | None:
    """The mean and t band across the seeds' curves, at every step any of them logged; None
    when none logged a finite value."""
    steps = sorted({step for curve in curves for step in curve})
    columns = []
    for step in steps:
        values = [curve[step] for curve in curves if step in curve and math.isfinite(curve[step])]
        if values:
            columns.append((step, t_interval(values)))
    if not columns:
        return None
    return GroupCurve(
        label=label,
        steps=tuple(step for step, _ in columns),
        mean=tuple(est.value for _, est in columns),
        low=tuple(est.low for _, est in columns),
        high=tuple(est.high for _, est in columns),
        n=tuple(est.n for _, est in columns),
    )


def sweep_curves(groups: Sequence[Any], name: str) -> list[GroupCurve]:
    """One curve per group (`GroupRow`s: label and jobs) that logged `name`, completed jobs
    only (a failed job's curve stops wherever it failed)."""
    stage, metric = parse_curve(name)
    curves = []
    for row in groups:
        jobs: Sequence[Job] = [job for job in row.jobs if job.completed]
        curve = group_curve(row.label, [job_curve(job.path, stage, metric) for job in jobs])
        if curve is not None:
            curves.append(curve)
    return curves


def curves_csv(curves_by_name: Mapping[str, Sequence[GroupCurve]]) -> str:
    """Every drawn point: curve, group, step, n seeds, mean, 95% low and high."""
    lines = [["curve", "group", "step", "n_seeds", "mean", "ci_low", "ci_high"]]
    for name, curves in curves_by_name.items():
        for c in curves:
            for i, step in enumerate(c.steps):
                lines.append([name, c.label, step, c.n[i], c.mean[i], c.low[i], c.high[i]])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


def write_curves(groups: Sequence[Any], names: Sequence[str], out_dir: Path) -> dict[str, Path]:
    """curve_<stage>_<metric>.png per curve name that some group logged, and curves.csv with
    the points; {} when no group logged any of them."""
    drawn = {name: sweep_curves(groups, name) for name in names}
    drawn = {name: curves for name, curves in drawn.items() if curves}
    paths: dict[str, Path] = {}
    for name, curves in drawn.items():
        file = f"curve_{_file_stem(name)}.png"
        fig = plots.curve_plot(
            [(c.label, c.steps, c.mean, c.low, c.high) for c in curves], metric=name
        )
        paths[file] = plots.save_png(fig, out_dir / file)
    if drawn:
        paths["curves.csv"] = write_atomic(out_dir / "curves.csv", curves_csv(drawn))
    return paths


def _file_stem(name: str) -> str:
    return name.replace("/", "_")
