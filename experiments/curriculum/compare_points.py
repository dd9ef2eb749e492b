"""The curriculum study's paired comparison at each evaluated point (after SFT, after GRPO).

    python experiments/curriculum/compare_points.py multirun/<date>/<time> [--out FILE]

The sweep's own aggregate (`python -m medrl.aggregate`) compares the arms' products (the GRPO
point). This script applies the same paired statistic (`medrl.sweeps.aggregate.paired_stat`:
(seed, item) pairs matched by seed, cluster bootstrap over items, pooled McNemar) to every point
both arms evaluated, so the SFT curriculum's effect is seen before GRPO as well. It also counts
each arm's predicted labels, since collapse onto one label is what a small model does here.
Writes a markdown table, and with --plot a figure of both.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import replace
from pathlib import Path

from medrl.evaluation.predictions import read_predictions
from medrl.sweeps.aggregate import matched_jobs, paired_stat
from medrl.sweeps.collect import COMPLETED, Job, collect_jobs, parse_override

BASELINE = "curriculum_closed"
POINTS = ("sft", "grpo")
LABELS = ("yes", "no", "maybe", "none")


def arm_of(job: Job) -> str:
    return dict(parse_override(o) for o in job.overrides)["experiment"]


def at_point(job: Job, point: str) -> Job:
    """The job with its predictions at `point` instead of its product's."""
    return replace(job, predictions=job.path / "eval" / point / "predictions.jsonl")


def label_counts(jobs: list[Job], point: str) -> str:
    counts: Counter[str] = Counter()
    for job in jobs:
        for p in read_predictions(at_point(job, point).predictions):
            counts[p.answer or "none"] += 1
    return " / ".join(str(counts[label]) for label in LABELS)


def table(sweep_dir: Path) -> str:
    jobs = [job for job in collect_jobs(sweep_dir) if job.status == COMPLETED]
    arms: dict[str, list[Job]] = {}
    for job in jobs:
        arms.setdefault(arm_of(job), []).append(job)
    lines = [
        "| point | arm | seeds | accuracy | diff vs closed-only [95% CI] | McNemar p (b / c) "
        "| answers yes / no / maybe / none |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for point in POINTS:
        base = [at_point(job, point) for job in arms[BASELINE]]
        for arm in sorted(arms, key=lambda name: name != BASELINE):
            group = [at_point(job, point) for job in arms[arm]]
            stat = paired_stat(matched_jobs(base, group, ["seed"]))
            paired = (
                "(baseline)"
                if arm == BASELINE
                else f"{stat.diff:+.3f} [{stat.diff_low:+.3f}, {stat.diff_high:+.3f}]"
            )
            test = "" if arm == BASELINE else f"{stat.p_value:.3f} ({stat.b} / {stat.c})"
            lines.append(
                f"| {point} | {arm} | {stat.n_seeds} | {stat.acc_group:.3f} | {paired} | {test} "
                f"| {label_counts(group, point)} |"
            )
    return "\n".join(lines) + "\n"


def plot(sweep_dir: Path, out: Path) -> None:
    """Accuracy at each point, per arm: one dot per seed, a bar at their mean, and the share of
    "yes" answers (the majority label) beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = [job for job in collect_jobs(sweep_dir) if job.status == COMPLETED]
    arms = sorted({arm_of(job) for job in jobs}, key=lambda name: name != BASELINE)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, measure in zip(axes, ("accuracy", "share answering yes"), strict=True):
        for offset, arm in enumerate(arms):
            for x, point in enumerate(POINTS):
                values = []
                for job in (j for j in jobs if arm_of(j) == arm):
                    preds = read_predictions(at_point(job, point).predictions)
                    hits = [
                        p.correct if measure == "accuracy" else p.answer == "yes" for p in preds
                    ]
                    values.append(sum(hits) / len(hits))
                position = x + (offset - 0.5) * 0.35
                ax.bar(
                    position,
                    sum(values) / len(values),
                    width=0.33,
                    alpha=0.5,
                    color=f"C{offset}",
                    label=arm if x == 0 else None,
                )
                ax.scatter([position] * len(values), values, color=f"C{offset}", zorder=3, s=14)
        ax.set_xticks(range(len(POINTS)), [f"after {p}" for p in POINTS])
        ax.set_title(measure)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("PubMedQA labels, 150 items, dots = seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="write the figure here")
    args = parser.parse_args()
    text = table(args.sweep_dir)
    if args.out:
        args.out.write_text(text)
    if args.plot:
        plot(args.sweep_dir, args.plot)
    print(text)


if __name__ == "__main__":
    main()
