"""The real-weights model-size study's table: two models x base / SFT / SFT->GRPO x generated /
forced-choice accuracy on the same items, and the paired tests that compare them.

    python experiments/model_sizes/compare_real.py \
        experiments/model_sizes/results_real/sources.yaml \
        [--out experiments/model_sizes/results_real]

sources.yaml names every predictions file (the runs that wrote them are listed in the README):

    items: 300                      # the evaluation items every file must cover, the same ids
    models: [smollm2_135m, qwen2.5_coder_1.5b]   # the first is the baseline of the model test
    predictions:
      smollm2_135m:
        generate: {base: <path>, sft: <path>, grpo: <path>}
        choice_logprob: {base: <path>, sft: <path>, grpo: <path>}
      qwen2.5_coder_1.5b: ...

Writes table.md (accuracy with its 95% Wilson interval, n, the majority baseline of the items;
forced choice also length-normalized; generated also the parse rate), comparisons.md (paired:
larger model vs smaller at each point and mode; each point vs the previous one within a model;
forced choice vs generated for one model and point) with McNemar's exact p and the minimum
detectable difference of each test (80% power, 5% two-sided, at its observed discordance), and
accuracy.png. Every statistic is medrl's (medrl.evaluation.metrics), as in the eval reports.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

from medrl.evaluation.metrics import majority_baseline, majority_label, paired_comparison
from medrl.evaluation.predictions import Prediction, read_predictions, wilson_interval
from medrl.evaluation.report import mde_text

POINTS = ("base", "sft", "grpo")
POINT_NAMES = {"base": "base", "sft": "SFT", "grpo": "SFT->GRPO"}
MODES = ("generate", "choice_logprob")
MODE_NAMES = {"generate": "generated", "choice_logprob": "forced choice"}


@dataclass(frozen=True)
class Cell:
    """One model at one point in one mode: its predictions on the study's items."""

    model: str
    point: str
    mode: str
    predictions: list[Prediction]


def load_cells(sources: dict, root: Path) -> list[Cell]:
    """Every (model, mode, point) the sources name, read and checked: all present, each
    covering exactly the same item ids, `items` of them."""
    cells = []
    for model in sources["models"]:
        for mode in MODES:
            paths = sources["predictions"][model][mode]
            missing = [point for point in POINTS if point not in paths]
            if missing:
                raise ValueError(f"sources: {model} / {mode} names no predictions for {missing}")
            for point in POINTS:
                predictions = read_predictions(root / paths[point])
                cells.append(Cell(model, point, mode, predictions))
    check_same_items(cells, int(sources["items"]))
    return cells


def check_same_items(cells: list[Cell], items: int) -> None:
    first = {p.id for p in cells[0].predictions}
    if len(first) != items:
        raise ValueError(f"{describe(cells[0])} covers {len(first)} items, sources say {items}")
    for cell in cells[1:]:
        ids = {p.id for p in cell.predictions}
        if ids != first:
            raise ValueError(f"{describe(cell)} covers other items than {describe(cells[0])}")


def describe(cell: Cell) -> str:
    return f"{cell.model} {POINT_NAMES[cell.point]} ({MODE_NAMES[cell.mode]})"


def rate(flags: list[bool]) -> str:
    """k/n as "0.360 [0.309, 0.415]" (95% Wilson)."""
    low, high = wilson_interval(sum(flags), len(flags))
    return f"{sum(flags) / len(flags):.3f} [{low:.3f}, {high:.3f}]"


def accuracy_table(cells: list[Cell]) -> str:
    gold = [p.gold for p in cells[0].predictions]
    lines = [
        f'Items: {len(gold)}; majority baseline (always "{majority_label(gold)}"): '
        f"{majority_baseline(gold):.3f}.",
        "",
        "| model | point | mode | n | accuracy [95% CI] | length-normalized [95% CI] "
        "| parse rate |",
        "| --- | --- | --- | ---: | --- | --- | ---: |",
    ]
    for cell in cells:
        preds = cell.predictions
        norm = rate([bool(p.correct_norm) for p in preds]) if cell.mode == "choice_logprob" else ""
        parsed = (
            f"{sum(p.format_ok for p in preds) / len(preds):.3f}" if cell.mode == "generate" else ""
        )
        lines.append(
            f"| {cell.model} | {POINT_NAMES[cell.point]} | {MODE_NAMES[cell.mode]} | {len(preds)} "
            f"| {rate([p.correct for p in preds])} | {norm} | {parsed} |"
        )
    return "\n".join(lines)


def comparison_pairs(cells: list[Cell], models: list[str]) -> list[tuple[str, Cell, Cell]]:
    """(section, A, B) for every paired test the study reports: B - A."""
    at = {(c.model, c.point, c.mode): c for c in cells}
    small, large = models[0], models[1]
    pairs = [
        ("larger vs smaller model", at[small, point, mode], at[large, point, mode])
        for mode in MODES
        for point in POINTS
    ]
    pairs += [
        ("training step within a model", at[model, before, mode], at[model, after, mode])
        for model in models
        for mode in MODES
        for before, after in zip(POINTS, POINTS[1:], strict=False)
    ]
    pairs += [
        (
            "forced choice vs generated",
            at[model, point, "generate"],
            at[model, point, "choice_logprob"],
        )
        for model in models
        for point in POINTS
    ]
    return pairs


def comparisons_table(pairs: list[tuple[str, Cell, Cell]]) -> str:
    lines = [
        "| comparison | A | B | n | B - A [95% CI] | b / c | McNemar p | min. detectable |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for section, a, b in pairs:
        result = paired_comparison(a.predictions, b.predictions)
        p = "<0.001" if result.p_value < 0.001 else f"{result.p_value:.3f}"
        lines.append(
            f"| {section} | {describe(a)} | {describe(b)} | {result.n} "
            f"| {result.diff:+.3f} [{result.diff_low:+.3f}, {result.diff_high:+.3f}] "
            f"| {result.b} / {result.c} | {p} | {mde_text(result.n, result.b + result.c)} |"
        )
    return "\n".join(lines)


def plot(cells: list[Cell], models: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gold = [p.gold for p in cells[0].predictions]
    at = {(c.model, c.point, c.mode): c for c in cells}
    series = [(model, mode) for model in models for mode in MODES]
    width = 0.8 / len(series)
    colors = {model: f"C{i}" for i, model in enumerate(models)}  # one colour per model,
    hatches = {"generate": "", "choice_logprob": "//"}  # forced choice hatched
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, (model, mode) in enumerate(series):
        xs, ys, errs = [], [], [[], []]
        for i, point in enumerate(POINTS):
            preds = at[model, point, mode].predictions
            right = sum(p.correct for p in preds)
            low, high = wilson_interval(right, len(preds))
            acc = right / len(preds)
            xs.append(i + (k - (len(series) - 1) / 2) * width)
            ys.append(acc)
            errs[0].append(acc - low)
            errs[1].append(high - acc)
        ax.bar(
            xs,
            ys,
            width,
            yerr=errs,
            capsize=3,
            color=colors[model],
            hatch=hatches[mode],
            edgecolor="white",
            label=f"{model}, {MODE_NAMES[mode]}",
        )
    ax.axhline(majority_baseline(gold), color="gray", linestyle="--", label="majority baseline")
    ax.set_xticks(range(len(POINTS)), [POINT_NAMES[p] for p in POINTS])
    ax.set_ylabel(f"accuracy on {len(gold)} MedMCQA items (95% Wilson)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", type=Path, help="sources.yaml (see the module docstring)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the sources')")
    parser.add_argument("--root", type=Path, default=Path("."), help="paths are relative to it")
    args = parser.parse_args(argv)
    sources = yaml.safe_load(args.sources.read_text())
    out = args.out or args.sources.parent
    out.mkdir(parents=True, exist_ok=True)
    models = list(sources["models"])
    cells = load_cells(sources, args.root)
    (out / "table.md").write_text(accuracy_table(cells) + "\n")
    (out / "comparisons.md").write_text(comparisons_table(comparison_pairs(cells, models)) + "\n")
    plot(cells, models, out / "accuracy.png")
    print((out / "table.md").read_text())
    print((out / "comparisons.md").read_text())


if __name__ == "__main__":
    main()
