"""`python -m medrl.aggregate <multirun dir>`: tables, plots and paired tests of a Hydra sweep.

Writes `<multirun dir>/aggregate/` (summary.md, summary.csv, jobs.csv, plots) and prints the
summary. Settings come from the jobs' `aggregate` config block; flags override them. The
AggregateOnMultirunEnd callback runs the same thing when a sweep ends; this entry point reruns
it (other metrics, another baseline) or aggregates a sweep that was interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from medrl.sweeps.aggregate import DIRECTIONS, Settings, aggregate_sweep, settings_from_mapping
from medrl.sweeps.collect import aggregate_block, collect_jobs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medrl.aggregate",
        description="Aggregate a Hydra multirun folder: group jobs across seeds, 95% t "
        "intervals, best group, paired tests against a baseline group, plots.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder (holds 0/, 1/, ...)")
    parser.add_argument(
        "--metric",
        action="append",
        help="metric to tabulate (repeat; the first is primary). "
        "Default: the jobs' optimized_metric and eval/format_rate",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        help="override string that picks the baseline group (repeat), e.g. algorithm=sft",
    )
    parser.add_argument(
        "--seed-key", action="append", help="override key of replicates (repeat; default: seed)"
    )
    parser.add_argument("--direction", choices=DIRECTIONS, help="best = highest or lowest mean")
    parser.add_argument(
        "--curve",
        action="append",
        help="learning curve <stage>/<metric> to draw per group over steps (repeat), e.g. "
        "grpo/val/accuracy; default: the jobs' aggregate.curves",
    )
    return parser


def resolve_settings(sweep_dir: Path, args: argparse.Namespace) -> Settings:
    """The jobs' `aggregate` block, with each flag that was given replacing its setting."""
    settings = settings_from_mapping(aggregate_block(collect_jobs(sweep_dir)))
    flags = {
        "metrics": tuple(args.metric) if args.metric else None,
        "baseline": tuple(args.baseline) if args.baseline else None,
        "seed_keys": tuple(args.seed_key) if args.seed_key else None,
        "direction": args.direction,
        "curves": tuple(args.curve) if args.curve else None,
    }
    return replace(settings, **{name: v for name, v in flags.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 with a message on stderr for a bad folder or
    setting)."""
    args = build_parser().parse_args(argv)
    try:
        result = aggregate_sweep(args.sweep_dir, resolve_settings(args.sweep_dir, args))
    except (FileNotFoundError, ValueError) as err:
        print(f"medrl.aggregate: error: {err}", file=sys.stderr)
        return 2
    print(result.paths["summary.md"].read_text(encoding="utf-8"))
    print(f"outputs in {result.paths['summary.md'].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
