"""Hydra multirun sweeps: collect job folders, aggregate across seeds, plots, Hydra callbacks."""

from medrl.sweeps.aggregate import (
    AggregateResult,
    GroupRow,
    PairedStat,
    Settings,
    aggregate_sweep,
    find_baseline,
    group_jobs,
    paired_stat,
    settings_from_mapping,
    summarize,
)
from medrl.sweeps.collect import Job, collect_jobs, find_job_dirs, load_job, parse_override
from medrl.sweeps.stats import t_interval, t_quantile_975

__all__ = [
    "AggregateResult",
    "GroupRow",
    "Job",
    "PairedStat",
    "Settings",
    "aggregate_sweep",
    "collect_jobs",
    "find_baseline",
    "find_job_dirs",
    "group_jobs",
    "load_job",
    "paired_stat",
    "parse_override",
    "settings_from_mapping",
    "summarize",
    "t_interval",
    "t_quantile_975",
]
