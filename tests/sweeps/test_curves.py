"""Learning curves in sweep aggregates: per group, the mean and 95% t band across seeds of a
metric over steps, from each job's validation history (val/) or CSV log (everything else)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from medrl.sweeps import Settings, aggregate_sweep
from medrl.sweeps.curves import group_curve, job_curve, parse_curve
from tests.sweeps.test_aggregate import PNG_SIGNATURE, write_job

G = "grpo.module.group_size"
# val/accuracy at steps 0, 3, 6 per (group size, seed)
VAL = {
    ("4", "1"): (0.2, 0.3, 0.4),
    ("4", "2"): (0.2, 0.5, 0.6),
    ("8", "1"): (0.2, 0.4, 0.7),
    ("8", "2"): (0.2, 0.4, 0.5),
}


def write_history(job: Path, stage: str, values: tuple[float, ...], every: int = 3) -> None:
    rows = [{"step": i * every, "n": 40.0, "accuracy": v} for i, v in enumerate(values)]
    folder = job / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stage}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_csv(job: Path, version: str, rows: list[dict[str, object]]) -> None:
    folder = job / "csv" / version
    folder.mkdir(parents=True, exist_ok=True)
    columns = sorted({key for row in rows for key in row})
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_curve_names_are_stage_then_metric():
    assert parse_curve("grpo/val/accuracy") == ("grpo", "val/accuracy")
    assert parse_curve("sft/train/loss") == ("sft", "train/loss")
    with pytest.raises(ValueError, match="<stage>/<metric>"):
        parse_curve("accuracy")
    with pytest.raises(ValueError, match="<stage>/<metric>"):
        Settings(curves=("grpo",))


def test_a_job_curve_reads_val_history_and_csv_logs_with_resumed_versions(tmp_path):
    write_history(tmp_path, "grpo", (0.1, 0.2))
    # Lightning's CSV rows: a metric's column is empty on rows other metrics filled.
    write_csv(
        tmp_path,
        "grpo",
        [
            {"step": 0, "reward/total": 1.0},
            {"step": 0, "loss/kl": 0.1},
            {"step": 1, "reward/total": 1.5},
            {"step": 2, "reward/total": 9.0},  # the killed run's last step, logged again below
        ],
    )
    write_csv(tmp_path, "grpo_resumed", [{"step": 2, "reward/total": 2.0}])
    write_csv(tmp_path, "grpo_other", [{"step": 5, "reward/total": 7.0}])  # another stage

    assert job_curve(tmp_path, "grpo", "val/accuracy") == {0: 0.1, 3: 0.2}
    assert job_curve(tmp_path, "grpo", "reward/total") == {0: 1.0, 1: 1.5, 2: 2.0}
    assert job_curve(tmp_path, "sft", "val/accuracy") == {}, "a stage the job did not run"


def test_the_band_is_the_t_interval_over_the_seeds_that_logged_each_step():
    curve = group_curve("g", [{0: 0.2, 3: 0.3}, {0: 0.2, 3: 0.5, 6: 0.6}])

    assert curve.steps == (0, 3, 6)
    assert curve.n == (2, 2, 1)
    assert curve.mean == pytest.approx((0.2, 0.4, 0.6))
    # step 3: mean 0.4, sd = sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.141421, t_{0.975,1} = 12.7062,
    # half-width 12.7062 * 0.141421 / sqrt(2) = 1.27062
    assert curve.low[1] == pytest.approx(0.4 - 1.270620, abs=1e-5)
    assert curve.high[1] == pytest.approx(0.4 + 1.270620, abs=1e-5)
    assert curve.low[0] == pytest.approx(0.2) and curve.high[0] == pytest.approx(0.2)
    assert math.isnan(curve.low[2]), "one seed at step 6: no band"


def test_a_sweep_aggregate_draws_one_png_per_curve_and_lists_the_points(tmp_path):
    for num, ((size, seed), values) in enumerate(VAL.items()):
        job = write_job(tmp_path, num, [f"{G}={size}", f"seed={seed}"], accuracy=0.5)
        write_history(job, "grpo", values)
    settings = Settings(
        metrics=("eval/accuracy",), curves=("grpo/val/accuracy", "grpo/reward/total")
    )

    result = aggregate_sweep(tmp_path, settings)

    png = result.paths["curve_grpo_val_accuracy.png"]
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert "curve_grpo_reward_total.png" not in result.paths, "no job logged it: no empty plot"
    rows = list(csv.DictReader(io.StringIO(result.paths["curves.csv"].read_text())))
    by_group = {
        (row["group"], int(row["step"])): float(row["mean"])
        for row in rows
        if row["curve"] == "grpo/val/accuracy"
    }
    assert by_group[(f"{G}=4", 3)] == pytest.approx(0.4)  # (0.3 + 0.5) / 2
    assert by_group[(f"{G}=8", 6)] == pytest.approx(0.6)  # (0.7 + 0.5) / 2
    assert len(by_group) == 6, "2 groups x 3 steps"
