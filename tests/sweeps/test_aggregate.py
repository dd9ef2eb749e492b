"""`medrl.aggregate`: a Hydra multirun folder -> groups across seeds, t intervals, the best
group, paired tests against a baseline, summary.md / summary.csv / jobs.csv and a PNG.

Every sweep here is a fake multirun folder written by `write_job`, with hand-chosen metrics and
per-item correctness, so each number below is computed by hand.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from medrl.aggregate import main
from medrl.evaluation import Estimate, Prediction, bootstrap_ci, write_predictions
from medrl.sweeps import (
    Settings,
    aggregate_sweep,
    collect_jobs,
    find_baseline,
    parse_override,
    settings_from_mapping,
    t_interval,
    t_quantile_975,
)
from medrl.sweeps.aggregate import GroupRow, group_jobs, mark_best, plot_metric

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
G = "grpo.module.group_size"
W = "reward.components.format.weight"


def prediction(item: int, correct: bool) -> Prediction:
    answer = "A" if correct else "B"
    return Prediction(
        id=f"q{item}",
        prompt="p",
        completion=answer,
        answer=answer,
        gold="A",
        correct=correct,
        format_ok=True,
        json_valid=True,
        schema_ok=True,
        num_tokens=3,
        truncated=False,
    )


def write_job(
    sweep: Path,
    num: int,
    overrides: Sequence[str],
    accuracy: float | None = None,
    correct: Sequence[int] | None = None,
    status: dict | None = None,
    aggregate: dict | None = None,
) -> Path:
    """One Hydra job folder. accuracy=None: no results.json (a failed or killed job).

    correct: per-item correctness of the product (grpo) predictions; the base point's file
    is all wrong, so a test reading it instead of the product would notice.
    """
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    seed = dict(parse_override(o) for o in overrides).get("seed", "42")
    config = {"seed": int(seed), "optimized_metric": "eval/accuracy"}
    if aggregate is not None:
        config["aggregate"] = aggregate
    OmegaConf.save(OmegaConf.create(config), job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), job / ".hydra" / "overrides.yaml")
    (job / ".hydra" / "hydra.yaml").write_text("hydra: {}\n")
    if status is not None:
        (job / "job_status.json").write_text(json.dumps(status))
    if accuracy is None:
        return job
    predictions = {}
    if correct is not None:
        write_predictions(
            job / "eval/base/predictions.jsonl", [prediction(i, False) for i in range(len(correct))]
        )
        write_predictions(
            job / "eval/grpo/predictions.jsonl",
            [prediction(i, bool(c)) for i, c in enumerate(correct)],
        )
        predictions = {"base": "eval/base/predictions.jsonl", "grpo": "eval/grpo/predictions.jsonl"}
    results = {
        "metrics": {"eval/accuracy": accuracy, "eval/format_rate": 0.9, "eval/base/accuracy": 0.0},
        "optimized_metric": {"name": "eval/accuracy", "value": accuracy},
        "chain": ["base", "sft", "grpo"],
        "predictions": predictions,
    }
    (job / "results.json").write_text(json.dumps(results))
    return job


# accuracy per (group size, format weight) and seed 1, 2
GRID = {
    ("8", "0.5"): (0.6, 0.8),
    ("4", "0.5"): (0.3, 0.5),
    ("8", "1.0"): (0.2, 0.3),
    ("4", "1.0"): (0.4, 0.4),
}


@pytest.fixture
def grid_sweep(tmp_path: Path) -> Path:
    """2 x 2 sweep x 2 seeds; `experiment=demo` is shared by every job (not swept)."""
    sweep = tmp_path / "grid"
    num = 0
    for (g, w), accuracies in GRID.items():
        for seed, accuracy in zip((1, 2), accuracies, strict=True):
            write_job(
                sweep, num, ["experiment=demo", f"{G}={g}", f"{W}={w}", f"seed={seed}"], accuracy
            )
            num += 1
    return sweep


# Per item q0..q9 (1 = right). Pooled over seeds: b (sft right, grpo wrong) = 1 (seed 1, q3),
# c (sft wrong, grpo right) = 6 (seed 1: q4 q5 q6; seed 2: q2 q3 q4).
SFT = {1: [1, 1, 1, 1, 0, 0, 0, 0, 0, 0], 2: [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]}
GRPO = {1: [1, 1, 1, 0, 1, 1, 1, 0, 0, 0], 2: [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]}


@pytest.fixture
def paired_sweep(tmp_path: Path) -> Path:
    """algorithm=sft (the baseline) and algorithm=grpo, seeds 1 and 2, 10 items; a failed job
    and a killed one; algorithm=dapo ran only seed 3 (nothing to pair with)."""
    sweep = tmp_path / "paired"
    num = 0
    for algorithm, table in (("sft", SFT), ("grpo", GRPO)):
        for seed, correct in table.items():
            write_job(
                sweep, num, [f"algorithm={algorithm}", f"seed={seed}"], sum(correct) / 10, correct
            )
            num += 1
    failed = {"status": "FAILED", "error": "RuntimeError: CUDA out of memory"}
    write_job(sweep, 4, ["algorithm=grpo", "seed=3"], status=failed)
    write_job(sweep, 5, ["algorithm=sft", "seed=3"])  # killed: no results, no status file
    write_job(sweep, 6, ["algorithm=dapo", "seed=3"], 0.5, [1] * 5 + [0] * 5)
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---- seeds: t intervals ----------------------------------------------------------------------


def test_t_interval_two_seeds_by_hand():
    # mean 0.4, sd = 0.1414, half width = t_{0.975,1} * sd / sqrt(2) = 12.706 * 0.1 = 1.2706
    est = t_interval([0.3, 0.5])
    assert (est.value, est.n) == (pytest.approx(0.4), 2)
    assert est.low == pytest.approx(0.4 - 1.2706205, abs=1e-6)
    assert est.high == pytest.approx(0.4 + 1.2706205, abs=1e-6)


def test_t_interval_three_seeds_by_hand():
    # mean 0.5, sd = sqrt(0.13) = 0.360555, half = 4.302653 * 0.360555 / sqrt(3) = 0.895669
    est = t_interval([0.2, 0.4, 0.9])
    assert est.value == pytest.approx(0.5)
    assert (est.low, est.high) == (
        pytest.approx(0.5 - 0.895669, abs=1e-6),
        pytest.approx(1.395669, abs=1e-6),
    )


def test_t_interval_is_undefined_with_one_seed_and_nan_with_none():
    one = t_interval([0.3])
    assert one.value == 0.3 and one.n == 1
    assert math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(t_interval([]).value)


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 31), 31, 40, 60, 120, 1000]:
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-5)
    with pytest.raises(ValueError):
        t_quantile_975(0)


# ---- grouping, best group, outputs -----------------------------------------------------------


def test_grid_sweep_groups_seeds_and_marks_the_best(grid_sweep):
    result = aggregate_sweep(grid_sweep)

    assert result.swept_keys == (G, W)  # experiment=demo is the same everywhere: not a column
    assert result.fixed_overrides == ("experiment=demo",)
    assert result.settings.metrics == ("eval/accuracy", "eval/format_rate")
    assert [(row.values[G], row.values[W], row.n_seeds) for row in result.groups] == [
        ("8", "0.5", 2),
        ("4", "0.5", 2),
        ("8", "1.0", 2),
        ("4", "1.0", 2),
    ]
    means = [row.stats["eval/accuracy"].value for row in result.groups]
    assert means == pytest.approx([0.7, 0.4, 0.25, 0.4])
    assert [row.best for row in result.groups] == [True, False, False, False]
    g4w05 = result.groups[1].stats["eval/accuracy"]
    assert (g4w05.low, g4w05.high) == (pytest.approx(-0.8706205), pytest.approx(1.6706205))
    assert result.failed == ()


def test_grouping_ignores_override_order_and_prefixes(tmp_path):
    write_job(tmp_path, 0, ["b=1", "+a=2", "seed=1"], 0.1)
    write_job(tmp_path, 1, ["seed=2", "a=2", "b=1"], 0.2)
    groups = group_jobs(collect_jobs(tmp_path), ["seed"])
    assert [[job.name for job in jobs] for jobs in groups.values()] == [["0", "1"]]


def test_a_null_metric_is_nan_and_left_out_of_the_mean(tmp_path):
    write_job(tmp_path, 0, ["seed=1"], 0.3)
    job = write_job(tmp_path, 1, ["seed=2"], 0.5)
    results = json.loads((job / "results.json").read_text())
    results["metrics"]["eval/accuracy"] = None
    (job / "results.json").write_text(json.dumps(results))
    (row,) = aggregate_sweep(tmp_path).groups
    assert (row.n_seeds, row.stats["eval/accuracy"].n, row.stats["eval/accuracy"].value) == (
        2,
        1,
        0.3,
    )


def test_minimize_marks_the_lowest_mean(grid_sweep):
    result = aggregate_sweep(grid_sweep, Settings(direction="minimize"))
    assert [row.best for row in result.groups] == [False, False, True, False]


def test_outputs_are_written(grid_sweep):
    result = aggregate_sweep(grid_sweep)
    out = grid_sweep / "aggregate"
    assert set(result.paths) == {
        "summary.md",
        "summary.csv",
        "jobs.csv",
        "eval_accuracy.png",
        "eval_format_rate.png",
    }
    assert all(path.parent == out and path.is_file() for path in result.paths.values())
    assert (out / "eval_accuracy.png").read_bytes()[:8] == PNG_SIGNATURE

    summary = (out / "summary.md").read_text()
    assert (
        f"| {G} | {W} | n seeds | eval/accuracy [95% CI] | eval/format_rate [95% CI] | note |"
        in summary
    )
    assert "| 8 | 0.5 | 2 | 0.700 [-0.571, 1.971] | 0.900 [0.900, 0.900] | best |" in summary
    assert summary.endswith("## Failed jobs\n\nnone\n")

    rows = read_csv(out / "summary.csv")
    assert [row["best"] for row in rows] == ["1", "0", "0", "0"]
    assert float(rows[1]["eval/accuracy_mean"]) == pytest.approx(0.4)
    assert float(rows[1]["eval/accuracy_ci_high"]) == pytest.approx(1.6706205)
    jobs = read_csv(out / "jobs.csv")
    assert len(jobs) == 8
    assert jobs[0] == {
        "job": "0",
        "status": "COMPLETED",
        "seed": "1",
        "overrides": f"experiment=demo {G}=8 {W}=0.5 seed=1",
        "error": "",
        "eval/accuracy": "0.6",
        "eval/format_rate": "0.9",
    }


def test_two_swept_keys_draw_a_heatmap_with_numeric_axes(grid_sweep):
    fig = plot_metric(aggregate_sweep(grid_sweep), "eval/accuracy")
    ax = fig.axes[0]
    assert len(ax.images) == 1
    assert [t.get_text() for t in ax.get_yticklabels()] == ["4", "8"]  # rows: first key, sorted
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1.0"]
    assert "0.700\nn=2" in [t.get_text() for t in ax.texts]


def test_one_swept_key_draws_a_line_numeric_values_sorted(tmp_path):
    for num, (size, seed, accuracy) in enumerate(
        [(8, 1, 0.5), (2, 1, 0.3), (16, 1, 0.6), (2, 2, 0.4)]
    ):
        write_job(tmp_path, num, [f"{G}={size}", f"seed={seed}"], accuracy)
    result = aggregate_sweep(tmp_path)
    line = plot_metric(result, "eval/accuracy").axes[0].lines[0]
    assert list(line.get_xdata()) == [2.0, 8.0, 16.0]
    assert list(line.get_ydata()) == pytest.approx([0.35, 0.5, 0.6])
    assert (tmp_path / "aggregate" / "eval_accuracy.png").read_bytes()[:8] == PNG_SIGNATURE
    summary = result.paths["summary.md"].read_text()
    assert "| 8 | 1 | 0.500 [n/a] | 0.900 [n/a] | |" in summary  # one seed: no interval


def test_one_non_numeric_key_keeps_the_sweep_order(tmp_path):
    for num, model in enumerate(["qwen3_0.6b", "qwen3_1.7b", "qwen3_4b"]):
        write_job(tmp_path, num, [f"model={model}"], 0.2 + 0.1 * num)
    ax = plot_metric(aggregate_sweep(tmp_path), "eval/accuracy").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["qwen3_0.6b", "qwen3_1.7b", "qwen3_4b"]


def test_three_swept_keys_draw_horizontal_bars(tmp_path):
    for num, (a, b, c) in enumerate([(1, 1, 1), (1, 2, 1), (2, 1, 2)]):
        write_job(tmp_path, num, [f"a={a}", f"b={b}", f"c={c}"], 0.1 * (num + 1))
    ax = plot_metric(aggregate_sweep(tmp_path), "eval/accuracy").axes[0]
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "a=1, b=1, c=1",
        "a=1, b=2, c=1",
        "a=2, b=1, c=2",
    ]


# ---- paired tests against the baseline -------------------------------------------------------


def test_paired_diff_interval_and_mcnemar_against_the_baseline(paired_sweep):
    result = aggregate_sweep(paired_sweep, Settings(baseline=("algorithm=sft",)))
    sft, grpo, dapo = result.groups
    assert (sft.baseline, sft.paired, sft.n_seeds) == (True, None, 2)  # seed 3 was killed
    assert dapo.paired is None  # ran only seed 3: no seed shared with the baseline

    p = grpo.paired
    assert (p.n_seeds, p.n_items, p.n_pairs) == (2, 10, 20)
    assert (p.acc_baseline, p.acc_group) == (pytest.approx(6 / 20), pytest.approx(11 / 20))
    assert p.diff == pytest.approx((6 - 1) / 20)
    assert (p.b, p.c) == (1, 6)
    assert p.p_value == pytest.approx(0.125)  # 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * 8 / 128

    # Cluster bootstrap over items: item q_i brings both seeds; its summed diff over seeds is
    # d_i, and a resample's diff is sum(d) / (2 seeds * 10 items).
    d = np.array([0, 0, 1, 0, 2, 1, 1, 0, 0, 0], dtype=float)
    expected = bootstrap_ci(lambda idx: d[idx].sum(axis=1) / 20, 10, 2000, 0)
    assert (p.diff_low, p.diff_high) == pytest.approx(expected)

    # Min. detectable diff at the 20 pooled pairs, discordance 7 / 20 = 0.35 (Connor 1987):
    # k(20) = (1.959964 * 4.472136 + 0.841621 * sqrt(20 + 0.708326 - 3.841459)) / 20.708326
    # = (8.765225 + 0.841621 * 4.106929) / 20.708326 = 0.590183; * sqrt(0.35) = 0.349.
    assert (p.discordance, p.mde) == (0.35, pytest.approx(0.349157, abs=1e-6))

    summary = result.paths["summary.md"].read_text()
    header = "| algorithm | n seeds | eval/accuracy [95% CI] | eval/format_rate [95% CI] "
    header += "| accuracy diff vs baseline [95% CI] | b / c | McNemar p "
    assert header + "| min. detectable diff (80% power) | note |" in summary
    sft_row = "| sft | 2 | 0.300 [-0.971, 1.571] | 0.900 [0.900, 0.900] "
    assert sft_row + "| (baseline) | | | | baseline |" in summary
    diff = f"+0.250 [{expected[0]:+.3f}, {expected[1]:+.3f}]"
    grpo_row = "| grpo | 2 | 0.550 [-0.085, 1.185] | 0.900 [0.900, 0.900] "
    assert grpo_row + f"| {diff} | 1 / 6 | 0.125 | 0.349 | best |" in summary
    dapo_row = "| dapo | 1 | 0.500 [n/a] | 0.900 [n/a] "
    assert dapo_row + "| n/a (no shared seed with predictions) | | | | |" in summary
    assert "min. detectable diff: the smallest |diff| that test detects" in summary

    rows = read_csv(result.paths["summary.csv"])
    assert (rows[1]["paired_b"], rows[1]["paired_c"], rows[1]["paired_p_value"]) == (
        "1",
        "6",
        "0.125",
    )
    assert float(rows[1]["paired_mde"]) == pytest.approx(0.349157, abs=1e-6)
    assert rows[0]["paired_diff"] == rows[0]["paired_mde"] == ""


def test_identical_groups_differ_by_exactly_zero(tmp_path):
    for num, algorithm in enumerate(["sft", "grpo"]):
        write_job(tmp_path, num, [f"algorithm={algorithm}", "seed=1"], 0.3, [1, 0, 1, 0])
    paired = aggregate_sweep(tmp_path, Settings(baseline=("algorithm=sft",))).groups[1].paired
    assert (paired.diff, paired.diff_low, paired.diff_high) == (0.0, 0.0, 0.0)
    assert (paired.b, paired.c, paired.p_value) == (0, 0, 1.0)
    assert math.isinf(paired.mde)  # no discordant pair: no difference is detectable


def test_baseline_must_match_exactly_one_group(grid_sweep, paired_sweep):
    with pytest.raises(ValueError, match="no group.*algorithm=sft; algorithm=grpo; algorithm=dapo"):
        aggregate_sweep(paired_sweep, Settings(baseline=("algorithm=ppo",)))
    with pytest.raises(ValueError, match=rf"2 groups.*{G}=4 {W}=0.5.*{G}=4 {W}=1.0"):
        aggregate_sweep(grid_sweep, Settings(baseline=(f"{G}=4",)))
    keys = [(("a", "1"), ("b", "1")), (("a", "1"), ("b", "2"))]
    assert find_baseline(keys, ["b=2", "a=1"]) == keys[1]


def test_paired_jobs_must_share_their_items(tmp_path):
    write_job(tmp_path, 0, ["algorithm=sft", "seed=1"], 0.5, [1, 0, 1, 0])
    write_job(tmp_path, 1, ["algorithm=grpo", "seed=1"], 0.5, [1, 0, 1])  # q3 missing
    with pytest.raises(ValueError, match=r"jobs 0 \(baseline\) and 1 .*different items.*q3"):
        aggregate_sweep(tmp_path, Settings(baseline=("algorithm=sft",)))


# ---- failed jobs, settings, the CLI ----------------------------------------------------------


def test_failed_and_incomplete_jobs_are_listed(paired_sweep):
    result = aggregate_sweep(paired_sweep)
    assert [(job.name, job.status) for job in result.failed] == [
        ("4", "FAILED"),
        ("5", "INCOMPLETE"),
    ]
    summary = result.paths["summary.md"].read_text()
    assert "7 jobs (5 completed, 1 failed, 1 incomplete), 3 groups" in summary
    assert "| 4 | FAILED | `algorithm=grpo seed=3` | RuntimeError: CUDA out of memory |" in summary
    assert (
        "| 5 | INCOMPLETE | `algorithm=sft seed=3` | no results.json and no job_status.json"
        in summary
    )
    jobs = {row["job"]: row for row in read_csv(result.paths["jobs.csv"])}
    assert (jobs["4"]["status"], jobs["4"]["error"], jobs["4"]["eval/accuracy"]) == (
        "FAILED",
        "RuntimeError: CUDA out of memory",
        "",
    )
    assert jobs["5"]["status"] == "INCOMPLETE"


def test_settings_come_from_the_jobs_config_block(tmp_path):
    block = {"metrics": ["eval/accuracy"], "baseline": ["algorithm=sft"], "direction": "minimize"}
    write_job(tmp_path, 0, ["algorithm=sft"], 0.2, [1, 0], aggregate=block)
    write_job(tmp_path, 1, ["algorithm=grpo"], 0.4, [1, 1], aggregate=block)
    result = aggregate_sweep(tmp_path)
    assert result.settings == Settings(
        ("eval/accuracy",), ("algorithm=sft",), ("seed",), "minimize"
    )
    assert result.groups[0].best and result.groups[0].baseline
    assert result.groups[1].paired.c == 1  # paired on the config's seed (42 in both jobs)


def test_settings_validation():
    assert settings_from_mapping(None) == Settings()
    assert settings_from_mapping({"baseline": "algorithm=sft", "metrics": None}) == Settings(
        baseline=("algorithm=sft",)
    )
    with pytest.raises(ValueError, match="unknown aggregate settings"):
        settings_from_mapping({"baselines": ["algorithm=sft"]})
    with pytest.raises(ValueError, match="direction"):
        Settings(direction="up")


def test_cli_prints_the_summary_and_flags_override_the_config(paired_sweep, capsys):
    code = main([str(paired_sweep), "--metric", "eval/accuracy", "--baseline", "algorithm=sft"])
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "| algorithm | n seeds | eval/accuracy [95% CI] | accuracy diff vs baseline [95% CI]" in out
    )
    assert out.rstrip().endswith(f"outputs in {paired_sweep / 'aggregate'}")

    code = main([str(paired_sweep), "--direction", "minimize"])
    assert code == 0
    assert "| sft | 2 | 0.300 [-0.971, 1.571] | 0.900 [0.900, 0.900] | best |" in (
        capsys.readouterr().out
    )


def test_cli_rejects_a_folder_without_jobs(tmp_path, capsys):
    (tmp_path / "empty" / "0").mkdir(parents=True)  # a folder, but no .hydra/overrides.yaml
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert f"no job folders in {tmp_path / 'empty'}" in err
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_groups_tied_at_the_best_mean_are_all_marked():
    rows = [
        GroupRow(
            key=(("lr", str(i)),),
            values={"lr": str(i)},
            jobs=(),
            stats={"eval/accuracy": Estimate(value, math.nan, math.nan, 1)},
        )
        for i, value in enumerate([0.4, 0.2, 0.4])
    ]
    assert [r.best for r in mark_best(rows, "eval/accuracy", "maximize")] == [True, False, True]
    assert [r.best for r in mark_best(rows, "eval/accuracy", "minimize")] == [False, True, False]
