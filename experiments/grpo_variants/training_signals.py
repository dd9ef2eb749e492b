"""What each variant did during training, per sweep group: the signals the aggregate leaves out.

    python experiments/grpo_variants/training_signals.py multirun/<date>/<time> [--out FILE]

Per variant (the job's `grpo=` override), averaged over its seeds and GRPO steps: the fraction
of groups whose rewards were all equal (rollout/frac_zero_std) and whose advantages were all 0
(rollout/frac_zero_adv), the mean token entropy (train/entropy), the clip fractions, the
rollout's predicted-letter shares, and the evaluated product's predicted-letter histogram
(collapse onto one letter is the failure to watch). Writes a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from medrl.evaluation.predictions import read_predictions
from medrl.sweeps.collect import collect_jobs, parse_override

STEP_METRICS = (
    "rollout/frac_zero_std",
    "rollout/frac_zero_adv",
    "train/entropy",
    "loss/clip_frac_low",
    "loss/clip_frac_high",
)
LETTERS = ("A", "B", "C", "D", "none")


def variant_of(overrides: tuple[str, ...]) -> str:
    values = dict(parse_override(o) for o in overrides)
    return values.get("grpo", "standard")


def step_means(job_dir: Path) -> dict[str, float]:
    """Each metric's mean over the GRPO steps of one job (csv/grpo/metrics.csv)."""
    with (job_dir / "csv" / "grpo" / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("rollout/step")]
    keys = [*STEP_METRICS, *(f"rollout/predicted_{letter}" for letter in LETTERS)]
    return {
        key: statistics.fmean(float(row[key]) for row in rows if row.get(key))
        for key in keys
        if any(row.get(key) for row in rows)
    }


def answer_histogram(predictions: Path) -> Counter[str]:
    return Counter(p.answer or "none" for p in read_predictions(predictions))


def table(sweep_dir: Path) -> str:
    signals: dict[str, list[dict[str, float]]] = defaultdict(list)
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for job in collect_jobs(sweep_dir):
        if job.status != "COMPLETED":
            continue
        variant = variant_of(job.overrides)
        signals[variant].append(step_means(job.path))
        if job.predictions is not None:
            answers[variant].update(answer_histogram(job.predictions))
    header = (
        "| variant | jobs | frac_zero_std | frac_zero_adv | entropy | clip low / high "
        "| rollout answers A/B/C/D/none | eval answers A/B/C/D/none (all seeds) |\n"
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |\n"
    )
    lines = []
    for variant, jobs in signals.items():
        mean = {k: statistics.fmean(j[k] for j in jobs if k in j) for k in jobs[0]}
        rollout = " / ".join(f"{mean.get(f'rollout/predicted_{x}', 0):.2f}" for x in LETTERS)
        evaluated = " / ".join(str(answers[variant][x]) for x in LETTERS)
        lines.append(
            f"| {variant} | {len(jobs)} | {mean['rollout/frac_zero_std']:.2f} "
            f"| {mean['rollout/frac_zero_adv']:.2f} | {mean['train/entropy']:.3f} "
            f"| {mean['loss/clip_frac_low']:.4f} / {mean['loss/clip_frac_high']:.4f} "
            f"| {rollout} | {evaluated} |"
        )
    return header + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = table(args.sweep_dir)
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
