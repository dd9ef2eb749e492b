"""The minimum detectable difference of every paired comparison the studies report.

    python experiments/detectable_differences.py [--out experiments/detectable_differences.md]

Reads the results each study keeps (never reruns anything): the sweep aggregates'
`results*/summary.csv` (paired_n_pairs, paired_b, paired_c), the curriculum's per-point table
`results/points.md` (its SFT point; n from the same summary.csv) and the embedded default's
eval `report.md` (n, b, c per comparison). For each comparison: n, b + c, the discordance
(b + c) / n, and the minimum detectable difference at that n and discordance
(`medrl.evaluation.power.mcnemar_mde`: McNemar, 80% power, 5% two-sided; "none" where too few
items are discordant for any difference to be detectable). Per study also: the smallest
difference its n can detect at any discordance (`mcnemar_mde_floor`), and the one detectable
under the conservative pre-study assumption of independent errors at the baseline's accuracy
(`mcnemar_mde_independent`). Pooled (seed, item) pairs count as independent, as in the
aggregate's McNemar test: with seeds that agree item by item the real MDE is larger.
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass
from pathlib import Path

from medrl.evaluation.power import (
    mcnemar_mde_floor,
    mcnemar_mde_independent,
    min_discordant,
)
from medrl.evaluation.report import mde_text

HERE = Path(__file__).parent
SWEEPS = {  # study -> its aggregate's summary.csv
    "sft_vs_grpo": HERE / "sft_vs_grpo/results/summary.csv",
    "sft_vs_grpo (Qwen2.5-Coder-1.5B)": HERE / "sft_vs_grpo/results_qwen/summary.csv",
    "reward_weights_x_group_size": HERE / "reward_weights_x_group_size/results/summary.csv",
    "grpo_variants": HERE / "grpo_variants/results/summary.csv",
    "curriculum": HERE / "curriculum/results/summary.csv",
    "model_sizes": HERE / "model_sizes/results_cpu/summary.csv",
}


@dataclass(frozen=True)
class Comparison:
    study: str
    name: str
    n: int
    b: int
    c: int
    acc_baseline: float


def sweep_comparisons(study: str, path: Path) -> list[Comparison]:
    """The non-baseline rows of a sweep aggregate's summary.csv."""
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["paired_n_pairs"]]
    return [
        Comparison(
            study,
            row["group"],
            int(row["paired_n_pairs"]),
            int(row["paired_b"]),
            int(row["paired_c"]),
            float(row["paired_acc_baseline"]),
        )
        for row in rows
    ]


def curriculum_sft_point() -> list[Comparison]:
    """The SFT-point rows of results/points.md: | point | arm | seeds | accuracy | diff |
    p (b / c) | ...; n from the GRPO point's summary.csv (the same 300 (seed, item) pairs)."""
    [grpo] = sweep_comparisons("curriculum", SWEEPS["curriculum"])
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (HERE / "curriculum/results/points.md").read_text().splitlines()
    ]
    sft = [cells for cells in rows if cells[0] == "sft"]
    [baseline] = [float(cells[3]) for cells in sft if cells[4] == "(baseline)"]
    found = []
    for cells in sft:
        match = re.fullmatch(r"[\d.]+ \((\d+) / (\d+)\)", cells[5])
        if match:
            b, c = int(match.group(1)), int(match.group(2))
            name = f"{cells[1]} (sft point)"
            found.append(Comparison("curriculum", name, grpo.n, b, c, baseline))
    return found


def embedded_default() -> list[Comparison]:
    """The paired rows of embedded_default/report.md:
    | name | n | acc A | acc B | diff | b | c | p | (and, in reports since 04526a6, | MDE |)."""
    found = []
    for line in (HERE / "embedded_default/report.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) in (8, 9) and "->" in cells[0]:
            n, b, c = int(cells[1]), int(cells[5]), int(cells[6])
            found.append(Comparison("embedded_default", cells[0], n, b, c, float(cells[2])))
    return found


def table(comparisons: list[Comparison]) -> str:
    lines = [
        "| study | comparison | n | b + c | discordance | min. detectable diff (80% power) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for cmp in comparisons:
        discordant = cmp.b + cmp.c
        lines.append(
            f"| {cmp.study} | {cmp.name} | {cmp.n} | {discordant} | {discordant / cmp.n:.3f} "
            f"| {mde_text(cmp.n, discordant)} |"
        )
    return "\n".join(lines)


def study_table(comparisons: list[Comparison]) -> str:
    """Per study and n: the floor (any discordance) and the MDE under independent errors."""
    lines = [
        "| study | n | smallest detectable at any discordance (b + c needed) "
        "| MDE under independent errors at the baseline accuracy |",
        "| --- | ---: | --- | --- |",
    ]
    seen = set()
    for cmp in comparisons:
        key = (cmp.study, cmp.n, round(cmp.acc_baseline, 3))  # as shown
        if key in seen:
            continue
        seen.add(key)
        floor = f"{mcnemar_mde_floor(cmp.n):.3f} ({min_discordant(cmp.n)})"
        independent = mcnemar_mde_independent(cmp.n, cmp.acc_baseline)
        lines.append(
            f"| {cmp.study} | {cmp.n} | {floor} | {independent:.3f} at {cmp.acc_baseline:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    comparisons = embedded_default()
    for study, path in SWEEPS.items():
        comparisons += sweep_comparisons(study, path)
        if study == "curriculum":
            comparisons += curriculum_sft_point()
    text = (
        "# Minimum detectable differences of the studies' paired comparisons\n\n"
        "Written by `python experiments/detectable_differences.py --out "
        "experiments/detectable_differences.md` from the results each study keeps. McNemar, 80% "
        "power, 5% two-sided, at each comparison's n and observed discordance (b + c) / n "
        "(Connor 1987; medrl/evaluation/power.py); (seed, item) pairs pooled over seeds count "
        "as independent, as in the aggregate's test.\n\n"
        + table(comparisons)
        + "\n\nPer study: the smallest difference its n can detect at all (reached when every "
        "discordant item goes one way), and the minimum detectable improvement under the "
        "conservative pre-study assumption of independent errors at the baseline's accuracy.\n\n"
        + study_table(comparisons)
        + "\n"
    )
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
