"""Aggregate a Hydra multirun sweep: group jobs across seeds, intervals, paired tests, outputs.

Groups. Jobs whose overrides are equal once the seed keys are removed (order-insensitive) form a
group: one configuration, several seeds. Swept keys (the table columns) are the override keys
whose value is not the same in every job; overrides shared by every job (`experiment=x`) are
listed once as fixed and do not become columns, so a 2 x 2 sweep stays a heatmap.

Across seeds. Per group and metric: the mean of the per-seed values and a 95% Student t interval
mean +- t_{0.975, n-1} * sd / sqrt(n) (sd with n - 1), i.e. seeds are the unit of replication.
With one seed the interval is undefined (nan, shown "n/a"); with none the mean is too.

Against a baseline. The baseline group is the unique group whose overrides include every
baseline override. Each other group is compared with it on its jobs' product predictions
(the last evaluated chain point), pairing jobs by seed value (seeds present in both groups):
  - correctness per (seed, item); a sampled evaluation (k > 1 per item) is reduced to its
    majority vote first, as in the eval stage's own paired tests;
  - diff = mean over matched (seed, item) pairs of correct_group - correct_baseline;
  - its 95% interval is a cluster bootstrap over item ids: resample item ids with replacement,
    each drawn item bringing all of its matched seeds (seeds share items, so items, not
    (seed, item) pairs, are the independent unit); statistic = sum of the drawn items' diffs /
    their number of pairs; percentile interval via `medrl.evaluation.metrics.bootstrap_ci`;
  - McNemar's exact test on the discordant (seed, item) pairs pooled over seeds
    (b: baseline right, group wrong; c: baseline wrong, group right). Pooling treats the
    pairs as independent, which overstates the evidence when seeds agree item by item; the
    bootstrap interval is the estimate to trust, the p-value a screen;
  - the minimum detectable difference (McNemar, 80% power, 5% two-sided) at n_pairs and the
    pooled discordance (b + c) / n_pairs (`medrl.evaluation.power.mcnemar_mde`); the same
    pooling makes it optimistic when seeds agree item by item.
  A paired job's item ids must equal its partner's (ValueError naming some that differ).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medrl.evaluation.metrics import (
    Estimate,
    bootstrap_ci,
    discordant_counts,
    mcnemar_exact,
)
from medrl.evaluation.power import mcnemar_mde
from medrl.evaluation.predictions import read_predictions
from medrl.evaluation.report import MDE_HEADER, mde_text
from medrl.evaluation.sampling import majority_vote
from medrl.sweeps import plots
from medrl.sweeps.collect import (
    COMPLETED,
    Job,
    aggregate_block,
    collect_jobs,
    parse_override,
    seed_of,
)
from medrl.sweeps.curves import parse_curve, write_curves
from medrl.sweeps.stats import t_interval
from medrl.utils.io import write_atomic

DIRECTIONS = ("maximize", "minimize")
FORMAT_RATE = "eval/format_rate"
UNSET = "(default)"  # a swept key that a group does not override
OUTPUT_DIR = "aggregate"
# PairedStat fields, in summary.csv order (as paired_<field> columns).
_PAIRED_FIELDS = (
    "n_seeds",
    "n_items",
    "n_pairs",
    "acc_baseline",
    "acc_group",
    "diff",
    "diff_low",
    "diff_high",
    "b",
    "c",
    "p_value",
    "mde",
)

GroupKey = tuple[tuple[str, str], ...]  # sorted (key, value) overrides, seed keys removed


class BaselineNotFound(ValueError):
    """The declared baseline matches no group (a typo, or, mid-sweep, no baseline job yet)."""


@dataclass(frozen=True)
class Settings:
    """What to aggregate; the `aggregate` block of the job config, or CLI flags.

    metrics:   metrics to tabulate, the first being primary (best group, plots). Empty: the
               jobs' optimized_metric, plus eval/format_rate when the jobs report it.
    baseline:  override strings that pick the baseline group; empty: no paired tests.
    seed_keys: override keys that are replicates, not configurations.
    direction: whether the best group has the highest (maximize) or lowest primary mean.
    curves:    learning curves to draw, `<stage>/<metric>` (grpo/val/accuracy,
               grpo/reward/total): per group, the mean and 95% band across seeds over steps
               (medrl.sweeps.curves); a curve no job logged is left out.
    """

    metrics: tuple[str, ...] = ()
    baseline: tuple[str, ...] = ()
    seed_keys: tuple[str, ...] = ("seed",)
    direction: str = "maximize"
    curves: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction={self.direction!r}; expected one of {list(DIRECTIONS)}")
        for name in self.curves:
            parse_curve(name)  # a malformed name fails before any job is read


@dataclass(frozen=True)
class PairedStat:
    """A group against the baseline on (seed, item) pairs matched by seed and item id.

    discordance, mde (derived): (b + c) / n_pairs and the minimum detectable difference there
    (`medrl.evaluation.power.mcnemar_mde`; inf when none is detectable).
    """

    n_seeds: int
    n_items: int
    n_pairs: int
    acc_baseline: float
    acc_group: float
    diff: float
    diff_low: float
    diff_high: float
    b: int  # baseline right, group wrong
    c: int  # baseline wrong, group right
    p_value: float

    @property
    def discordance(self) -> float:
        """(b + c) / n_pairs: the share of (seed, item) pairs where exactly one side is right."""
        return (self.b + self.c) / self.n_pairs

    @property
    def mde(self) -> float:
        """Minimum detectable difference, 80% power, 5% two-sided, at n_pairs and discordance."""
        return mcnemar_mde(self.n_pairs, self.discordance)


@dataclass(frozen=True)
class GroupRow:
    """One configuration: its swept-key values, jobs, per-metric statistics across seeds."""

    key: GroupKey
    values: dict[str, str]
    jobs: tuple[Job, ...]
    stats: dict[str, Estimate]
    best: bool = False
    baseline: bool = False
    paired: PairedStat | None = None

    @property
    def n_seeds(self) -> int:
        """Completed jobs (seeds) of the group."""
        return sum(job.completed for job in self.jobs)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "all jobs"


@dataclass(frozen=True)
class AggregateResult:
    """Everything written to `<sweep>/aggregate/`, for callers and tests to inspect."""

    sweep_dir: Path
    settings: Settings  # metrics resolved (never empty unless no job reports any metric)
    swept_keys: tuple[str, ...]
    fixed_overrides: tuple[str, ...]
    groups: tuple[GroupRow, ...]
    jobs: tuple[Job, ...]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[Job, ...]:
        """Jobs without results (FAILED or INCOMPLETE), in job order."""
        return tuple(job for job in self.jobs if not job.completed)

    @property
    def primary_metric(self) -> str | None:
        return self.settings.metrics[0] if self.settings.metrics else None

    @property
    def best(self) -> GroupRow | None:
        return next((row for row in self.groups if row.best), None)


# ---- entry points -----------------------------------------------------------------------------


def aggregate_sweep(
    sweep_dir: str | Path,
    settings: Settings | None = None,
    n_boot: int = 2000,
    boot_seed: int = 0,
) -> AggregateResult:
    """Collect, summarize and write `<sweep_dir>/aggregate/`. settings=None: the jobs' own
    `aggregate` config block (defaults when absent)."""
    jobs = collect_jobs(sweep_dir)
    if settings is None:
        settings = settings_from_mapping(aggregate_block(jobs))
    result = summarize(jobs, settings, n_boot, boot_seed, sweep_dir=Path(sweep_dir))
    paths = write_outputs(result, Path(sweep_dir) / OUTPUT_DIR)
    return replace(result, paths=paths)


def settings_from_mapping(block: Mapping[str, Any] | None) -> Settings:
    """Settings from an `aggregate` config block; absent or null keys keep their defaults.

    A single string stands for a one-item list (baseline: algorithm=sft).
    """
    block = dict(block or {})
    known = {"metrics", "baseline", "seed_keys", "direction", "curves"}
    unknown = sorted(set(block) - known)
    if unknown:
        raise ValueError(f"unknown aggregate settings {unknown}; valid: {sorted(known)}")
    values: dict[str, Any] = {}
    for name in ("metrics", "baseline", "seed_keys", "curves"):
        if block.get(name) is not None:
            raw = block[name]
            values[name] = (str(raw),) if isinstance(raw, str) else tuple(str(v) for v in raw)
    if block.get("direction") is not None:
        values["direction"] = str(block["direction"])
    return Settings(**values)


def summarize(
    jobs: Sequence[Job],
    settings: Settings,
    n_boot: int = 2000,
    boot_seed: int = 0,
    sweep_dir: Path = Path("."),
) -> AggregateResult:
    """Group rows with statistics, the best group and paired tests; no files written."""
    metrics = resolve_metrics(jobs, settings.metrics)
    settings = replace(settings, metrics=metrics)
    grouped = group_jobs(jobs, settings.seed_keys)
    swept, fixed = swept_keys(jobs, settings.seed_keys)
    rows = [
        GroupRow(key, _swept_values(key, swept), tuple(members), group_stats(members, metrics))
        for key, members in grouped.items()
    ]
    rows = mark_best(rows, metrics[0] if metrics else None, settings.direction)
    if settings.baseline:
        rows = add_paired(rows, settings.baseline, settings.seed_keys, n_boot, boot_seed)
    return AggregateResult(sweep_dir, settings, swept, fixed, tuple(rows), tuple(jobs))


# ---- statistics across seeds ------------------------------------------------------------------


def group_stats(jobs: Sequence[Job], metrics: Sequence[str]) -> dict[str, Estimate]:
    """Per metric, the t interval over the completed jobs that report a finite value."""
    stats = {}
    for metric in metrics:
        values = [job.metrics.get(metric, math.nan) for job in jobs if job.completed]
        stats[metric] = t_interval([v for v in values if math.isfinite(v)])
    return stats


def resolve_metrics(jobs: Sequence[Job], metrics: Sequence[str]) -> tuple[str, ...]:
    """`metrics` when given; else the jobs' optimized metric(s), plus eval/format_rate when a
    completed job reports it."""
    if metrics:
        return tuple(metrics)
    names = [job.optimized_metric for job in jobs if job.optimized_metric]
    resolved = list(dict.fromkeys(names))
    if FORMAT_RATE not in resolved and any(FORMAT_RATE in job.metrics for job in jobs):
        resolved.append(FORMAT_RATE)
    return tuple(resolved)


def mark_best(rows: Sequence[GroupRow], metric: str | None, direction: str) -> list[GroupRow]:
    """Flag the row with the highest (maximize) or lowest (minimize) finite mean of `metric`.
    Rows tied at that mean are all flagged (the data does not separate them, so picking the
    first would be arbitrary); no row is flagged when no mean is finite."""
    candidates = [
        (i, row.stats[metric].value)
        for i, row in enumerate(rows)
        if metric is not None and math.isfinite(row.stats[metric].value)
    ]
    if not candidates:
        return list(rows)
    values = [value for _, value in candidates]
    top = max(values) if direction == "maximize" else min(values)
    best = {i for i, value in candidates if value == top}
    return [replace(row, best=i in best) for i, row in enumerate(rows)]


# ---- grouping ---------------------------------------------------------------------------------


def group_key(job: Job, seed_keys: Sequence[str]) -> GroupKey:
    """The job's overrides as sorted (key, value) pairs, seed keys left out."""
    pairs = (parse_override(o) for o in job.overrides)
    return tuple(sorted(pair for pair in pairs if pair[0] not in seed_keys))


def group_jobs(jobs: Sequence[Job], seed_keys: Sequence[str]) -> dict[GroupKey, list[Job]]:
    """Jobs that differ only by seed, grouped; groups in order of their first job."""
    groups: dict[GroupKey, list[Job]] = {}
    for job in jobs:
        groups.setdefault(group_key(job, seed_keys), []).append(job)
    return groups


def swept_keys(
    jobs: Sequence[Job], seed_keys: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(swept keys, fixed overrides): keys whose value differs between jobs (or that some jobs
    do not set), in order of first appearance; and the overrides every job shares."""
    keys = [dict(group_key(job, seed_keys)) for job in jobs]
    order = list(dict.fromkeys(k for job_keys in keys for k in job_keys))
    swept, fixed = [], []
    for key in order:
        values = {job_keys.get(key, UNSET) for job_keys in keys}
        if len(values) > 1:
            swept.append(key)
        else:
            fixed.append(f"{key}={values.pop()}")
    return tuple(swept), tuple(fixed)


def find_baseline(keys: Sequence[GroupKey], baseline: Sequence[str]) -> GroupKey:
    """The unique group key containing every baseline override; ValueError listing the
    candidates when none or several match."""
    wanted = {parse_override(o) for o in baseline}
    matches = [key for key in keys if wanted <= set(key)]
    if len(matches) == 1:
        return matches[0]
    which = "no group" if not matches else f"{len(matches)} groups"
    shown = matches or keys
    candidates = "; ".join(
        " ".join(f"{k}={v}" for k, v in key) or "(no overrides)" for key in shown
    )
    error = BaselineNotFound if not matches else ValueError
    raise error(
        f"baseline {list(baseline)} matches {which}; it must match exactly one. "
        f"{'Matching' if matches else 'Candidate'} groups: {candidates}"
    )


def _swept_values(key: GroupKey, swept: Sequence[str]) -> dict[str, str]:
    values = dict(key)
    return {k: values.get(k, UNSET) for k in swept}


# ---- paired tests against the baseline ---------------------------------------------------------


def add_paired(
    rows: Sequence[GroupRow],
    baseline: Sequence[str],
    seed_keys: Sequence[str],
    n_boot: int = 2000,
    boot_seed: int = 0,
) -> list[GroupRow]:
    """Mark the baseline row and give every other row its `PairedStat` (None when the two
    groups share no seed with predictions)."""
    base_key = find_baseline([row.key for row in rows], baseline)
    base = next(row for row in rows if row.key == base_key)
    cache: dict[Path, dict[str, bool]] = {}
    updated = []
    for row in rows:
        if row.key == base_key:
            updated.append(replace(row, baseline=True))
            continue
        pairs = matched_jobs(base.jobs, row.jobs, seed_keys)
        paired = paired_stat(pairs, cache, n_boot, boot_seed) if pairs else None
        updated.append(replace(row, paired=paired))
    return updated


def matched_jobs(
    baseline: Sequence[Job], group: Sequence[Job], seed_keys: Sequence[str]
) -> list[tuple[Job, Job]]:
    """(baseline job, group job) for each seed both groups completed with predictions."""
    base_by_seed, group_by_seed = _by_seed(baseline, seed_keys), _by_seed(group, seed_keys)
    common = [seed for seed in base_by_seed if seed in group_by_seed]
    return [(base_by_seed[seed], group_by_seed[seed]) for seed in common]


def paired_stat(
    pairs: Sequence[tuple[Job, Job]],
    cache: dict[Path, dict[str, bool]] | None = None,
    n_boot: int = 2000,
    boot_seed: int = 0,
) -> PairedStat:
    """Diff, cluster-bootstrap interval over items and pooled McNemar test (module docstring)."""
    cache = {} if cache is None else cache
    base_rows, group_rows, item_rows = [], [], []
    for base_job, group_job in pairs:
        base, group = _correctness(base_job, cache), _correctness(group_job, cache)
        _check_same_items(base_job, group_job, base, group)
        for item in base:
            base_rows.append(base[item])
            group_rows.append(group[item])
            item_rows.append(item)
    right_base = np.array(base_rows, dtype=bool)  # [P] (seed, item) pairs
    right_group = np.array(group_rows, dtype=bool)  # [P]
    items, item_index = np.unique(np.array(item_rows), return_inverse=True)  # [I], [P]
    delta = right_group.astype(float) - right_base.astype(float)  # [P]
    diff_sum = np.bincount(item_index, weights=delta, minlength=items.size)  # [I]
    count = np.bincount(item_index, minlength=items.size).astype(float)  # [I]

    def statistic(idx: np.ndarray) -> np.ndarray:  # idx [R, I] drawn item indices
        return diff_sum[idx].sum(axis=1) / count[idx].sum(axis=1)  # [R]

    low, high = bootstrap_ci(statistic, int(items.size), n_boot, boot_seed)
    b, c = discordant_counts(right_base, right_group)
    return PairedStat(
        n_seeds=len(pairs),
        n_items=int(items.size),
        n_pairs=int(delta.size),
        acc_baseline=float(right_base.mean()),
        acc_group=float(right_group.mean()),
        diff=float(delta.mean()),
        diff_low=low,
        diff_high=high,
        b=b,
        c=c,
        p_value=mcnemar_exact(b, c),
    )


def _by_seed(jobs: Sequence[Job], seed_keys: Sequence[str]) -> dict[tuple[str, ...], Job]:
    by_seed: dict[tuple[str, ...], Job] = {}
    for job in jobs:
        if job.status != COMPLETED or job.predictions is None:
            continue
        seed = seed_of(job, seed_keys)
        if seed in by_seed:
            raise ValueError(
                f"jobs {by_seed[seed].name} and {job.name} have the same configuration and "
                f"seed {seed}; cannot pair them by seed (seed_keys={list(seed_keys)})"
            )
        by_seed[seed] = job
    return by_seed


def _correctness(job: Job, cache: dict[Path, dict[str, bool]]) -> dict[str, bool]:
    """{item id: correct} of the job's product; k samples per item -> their majority vote."""
    assert job.predictions is not None
    if job.predictions not in cache:
        predictions = read_predictions(job.predictions)
        if any(p.sample != 0 for p in predictions):
            predictions = majority_vote(predictions)
        by_id = {p.id: p.correct for p in predictions}
        if len(by_id) != len(predictions):
            raise ValueError(f"{job.predictions}: an item id repeats")
        cache[job.predictions] = by_id
    return cache[job.predictions]


def _check_same_items(
    base_job: Job, group_job: Job, base: Mapping[str, bool], group: Mapping[str, bool]
) -> None:
    if base.keys() == group.keys():
        return
    differ = sorted(set(base) ^ set(group))
    shown = ", ".join(differ[:5]) + (f", ... ({len(differ) - 5} more)" if len(differ) > 5 else "")
    raise ValueError(
        f"jobs {base_job.name} (baseline) and {group_job.name} were evaluated on different items "
        f"({len(differ)} ids in only one of them: {shown}); paired tests need the same items"
    )


# ---- outputs ----------------------------------------------------------------------------------


def write_outputs(result: AggregateResult, out_dir: Path) -> dict[str, Path]:
    """summary.md, summary.csv, jobs.csv, one PNG per metric and one per learning curve (with
    curves.csv), each written atomically."""
    paths = {
        "summary.md": write_atomic(out_dir / "summary.md", summary_markdown(result)),
        "summary.csv": write_atomic(out_dir / "summary.csv", summary_csv(result)),
        "jobs.csv": write_atomic(out_dir / "jobs.csv", jobs_csv(result)),
    }
    for metric in result.settings.metrics:
        fig = plot_metric(result, metric)
        if fig is not None:
            name = f"{_file_stem(metric)}.png"
            paths[name] = plots.save_png(fig, out_dir / name)
    paths |= write_curves(result.groups, result.settings.curves, out_dir)
    return paths


def summary_markdown(result: AggregateResult) -> str:
    """The header notes, the group table and the failed-jobs section."""
    lines = ["# Sweep summary", "", *_header_notes(result), "", *_group_table(result), ""]
    lines += ["## Failed jobs", "", *_failed_table(result.failed)]
    return "\n".join(lines) + "\n"


def summary_csv(result: AggregateResult) -> str:
    """One row per group, one column per number (nan for undefined, empty when not paired)."""
    metrics = result.settings.metrics
    header = ["group", *result.swept_keys, "n_seeds", "n_jobs", "best", "baseline"]
    header += [f"{m}_{part}" for m in metrics for part in ("mean", "ci_low", "ci_high")]
    header += [f"paired_{name}" for name in _PAIRED_FIELDS]
    rows = []
    for row in result.groups:
        cells: list[Any] = [row.label, *row.values.values(), row.n_seeds, len(row.jobs)]
        cells += [int(row.best), int(row.baseline)]
        for m in metrics:
            cells += [row.stats[m].value, row.stats[m].low, row.stats[m].high]
        cells += [getattr(row.paired, name) if row.paired else "" for name in _PAIRED_FIELDS]
        rows.append(cells)
    return _csv_text(header, rows)


def jobs_csv(result: AggregateResult) -> str:
    """One row per job: folder, status, seed, overrides, error, and each metric's value."""
    keys = result.settings.seed_keys
    header = ["job", "status", "seed", "overrides", "error", *result.settings.metrics]
    rows = []
    for job in result.jobs:
        seed = " ".join(seed_of(job, keys))
        cells: list[Any] = [job.name, job.status, seed, " ".join(job.overrides), job.error or ""]
        cells += [job.metrics.get(m, "") for m in result.settings.metrics]
        rows.append(cells)
    return _csv_text(header, rows)


def plot_metric(result: AggregateResult, metric: str) -> Figure | None:
    """Heatmap for two swept keys, a line over one, horizontal bars otherwise; None when no
    group has a value to draw."""
    rows = [row for row in result.groups if math.isfinite(row.stats[metric].value)]
    if not rows:
        return None
    keys = result.swept_keys
    if len(keys) == 2:
        return _heatmap(result.groups, keys, metric)
    if len(keys) == 1:
        by_value = {row.values[keys[0]]: row.stats[metric] for row in rows}
        order = plots.ordered_values(list(by_value))
        stats = [by_value[v] for v in order]
        return plots.line_plot(order, *_columns(stats), key=keys[0], metric=metric)
    labels = [row.label for row in rows]
    return plots.bar_plot(labels, *_columns([row.stats[metric] for row in rows]), metric=metric)


def _heatmap(groups: Sequence[GroupRow], keys: Sequence[str], metric: str) -> Figure:
    row_values = plots.ordered_values([g.values[keys[0]] for g in groups])
    col_values = plots.ordered_values([g.values[keys[1]] for g in groups])
    means = np.full((len(row_values), len(col_values)), np.nan)  # [rows, cols]
    counts = np.zeros_like(means)  # [rows, cols]
    for g in groups:
        r, c = row_values.index(g.values[keys[0]]), col_values.index(g.values[keys[1]])
        means[r, c], counts[r, c] = g.stats[metric].value, g.stats[metric].n
    return plots.heatmap(means, counts, row_values, col_values, keys[0], keys[1], metric)


def _columns(stats: Sequence[Estimate]) -> tuple[list[float], list[float], list[float]]:
    return [s.value for s in stats], [s.low for s in stats], [s.high for s in stats]


def _header_notes(result: AggregateResult) -> list[str]:
    s = result.settings
    counts = {status: sum(j.status == status for j in result.jobs) for status in _statuses(result)}
    tally = ", ".join(f"{n} {status.lower()}" for status, n in counts.items())
    notes = [
        f"Sweep `{result.sweep_dir}`: {len(result.jobs)} jobs ({tally}), "
        f"{len(result.groups)} groups.",
        f"Groups: jobs that differ only in {', '.join(s.seed_keys) or 'nothing'}; "
        "95% intervals are Student t intervals across seeds (n/a with one seed).",
    ]
    if result.primary_metric:
        notes.append(f"Best: the {_best_word(s.direction)} mean {result.primary_metric}.")
    if result.fixed_overrides:
        notes.append(f"Fixed overrides (every job): `{' '.join(result.fixed_overrides)}`.")
    if s.baseline:
        notes.append(
            f"Baseline `{' '.join(s.baseline)}`: diff = group - baseline accuracy of the product "
            "predictions over (seed, item) pairs matched by seed, 95% cluster bootstrap over "
            "items; McNemar exact test on the pooled discordant pairs (b: baseline right, group "
            "wrong; c: baseline wrong, group right); min. detectable diff: the smallest "
            "|diff| that test detects with 80% power at the 5% level (two-sided) at the pooled "
            "pairs' n and discordance (b + c) / n (optimistic when seeds agree item by item; "
            "none where too few pairs are discordant)."
        )
    return [f"- {note}" for note in notes]


def _group_table(result: AggregateResult) -> list[str]:
    metrics, paired = result.settings.metrics, bool(result.settings.baseline)
    header = [*result.swept_keys, "n seeds", *(f"{m} [95% CI]" for m in metrics)]
    align = ["---"] * len(result.swept_keys) + ["---:"] + ["---"] * len(metrics)
    if paired:
        header += ["accuracy diff vs baseline [95% CI]", "b / c", "McNemar p", MDE_HEADER]
        align += ["---", "---:", "---:", "---:"]
    header.append("note")
    align.append("---")
    lines = [_md_row(header), _md_row(align)]
    for row in result.groups:
        cells = [*row.values.values(), str(row.n_seeds)]
        cells += [_with_ci(row.stats[m]) for m in metrics]
        if paired:
            cells += _paired_cells(row)
        notes = [word for word, flag in (("best", row.best), ("baseline", row.baseline)) if flag]
        cells.append(", ".join(notes))
        lines.append(_md_row(cells))
    return lines


def _paired_cells(row: GroupRow) -> list[str]:
    if row.baseline:
        return ["(baseline)", "", "", ""]
    p = row.paired
    if p is None:
        return ["n/a (no shared seed with predictions)", "", "", ""]
    diff = f"{p.diff:+.3f} [{_signed(p.diff_low)}, {_signed(p.diff_high)}]"
    return [diff, f"{p.b} / {p.c}", _p_value(p.p_value), mde_text(p.n_pairs, p.b + p.c)]


def _failed_table(failed: Sequence[Job]) -> list[str]:
    if not failed:
        return ["none"]
    lines = [_md_row(["job", "status", "overrides", "error"]), _md_row(["---"] * 4)]
    for job in failed:
        overrides = f"`{' '.join(job.overrides)}`" if job.overrides else "(none)"
        lines.append(_md_row([job.name, job.status, overrides, job.error or ""]))
    return lines


def _statuses(result: AggregateResult) -> list[str]:
    return list(dict.fromkeys([COMPLETED, *(job.status for job in result.jobs)]))


def _best_word(direction: str) -> str:
    return "highest" if direction == "maximize" else "lowest"


def _with_ci(estimate: Estimate) -> str:
    if not math.isfinite(estimate.value):
        return "n/a"
    if not (math.isfinite(estimate.low) and math.isfinite(estimate.high)):
        return f"{estimate.value:.3f} [n/a]"
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def _p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _md_row(cells: Sequence[str]) -> str:
    """A markdown table row; `|` inside a cell is escaped, an empty cell is `| |`."""
    texts = (str(c).replace("|", "\\|").replace("\n", " ") for c in cells)
    return "|" + "|".join(f" {t} " if t else " " for t in texts) + "|"


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[repr(c) if isinstance(c, float) else c for c in row] for row in rows])
    return buffer.getvalue()


def _file_stem(metric: str) -> str:
    """eval/accuracy -> eval_accuracy: a metric name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") or "metric"
