"""Every arm of the SFT vs GRPO sweep against the base model it started from, on the same items.

    python experiments/sft_vs_grpo/against_base.py multirun/study_sft_vs_grpo_qwen \
        outputs/study23/qwen_base_generate/eval/base/predictions.jsonl [--out FILE]

The sweep's own aggregate compares the arms with each other (baseline: SFT); the base model is
evaluated once, apart (greedy decoding: the same answers in every seed), so this script pairs it
with each arm seed by seed and applies the sweep's statistic (`medrl.sweeps.aggregate.
paired_stat`: (seed, item) pairs, cluster bootstrap over items, pooled McNemar, with the minimum
detectable difference). It also counts each arm's answers per label: collapse onto one label is
what a small model tends to learn here.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import replace
from pathlib import Path

from medrl.evaluation.predictions import read_predictions
from medrl.evaluation.report import mde_text
from medrl.sweeps.aggregate import paired_stat
from medrl.sweeps.collect import COMPLETED, Job, collect_jobs, parse_override

LABELS = ("A", "B", "C", "D", "none")


def arm_of(job: Job) -> str:
    return dict(parse_override(o) for o in job.overrides)["algorithm"]


def label_counts(paths: list[Path]) -> str:
    counts: Counter[str] = Counter()
    for path in paths:
        counts.update(p.answer or "none" for p in read_predictions(path))
    return " / ".join(str(counts[label]) for label in LABELS)


def table(sweep_dir: Path, base_predictions: Path) -> str:
    jobs = [job for job in collect_jobs(sweep_dir) if job.status == COMPLETED]
    arms: dict[str, list[Job]] = {}
    for job in jobs:
        arms.setdefault(arm_of(job), []).append(job)
    lines = [
        "| arm | seeds | (seed, item) pairs | base accuracy | arm accuracy | diff vs base [95% CI] "
        "| b / c | McNemar p | min. detectable | answers A / B / C / D / none |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
        f"| base | 1 | | | | | | | | {label_counts([base_predictions])} |",
    ]
    for arm in sorted(arms):
        # the base model's answers stand in for each seed's baseline (greedy: seed-free)
        pairs = [(replace(job, predictions=base_predictions), job) for job in arms[arm]]
        stat = paired_stat(pairs)
        p = "<0.001" if stat.p_value < 0.001 else f"{stat.p_value:.3f}"
        lines.append(
            f"| {arm} | {stat.n_seeds} | {stat.n_pairs} | {stat.acc_baseline:.3f} "
            f"| {stat.acc_group:.3f} "
            f"| {stat.diff:+.3f} [{stat.diff_low:+.3f}, {stat.diff_high:+.3f}] "
            f"| {stat.b} / {stat.c} | {p} | {mde_text(stat.n_pairs, stat.b + stat.c)} "
            f"| {label_counts([job.predictions for job in arms[arm]])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("base_predictions", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = table(args.sweep_dir, args.base_predictions)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
