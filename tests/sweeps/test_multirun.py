"""Real Hydra multiruns of `python -m medrl.train` on the smoke config: one folder, one W&B run
and one status per job, and an aggregate written by the sweep itself, with each launcher."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

# Two reward weightings x two group sizes; GRPO then evaluation of the GRPO model only.
GRID = [
    "reward.components.format.weight=0.5,1.0",
    "grpo.module.group_size=2,4",
]
SMOKE = ["debug=smoke", "logger=many", "stages=[grpo,eval]", "evaluation.include_base=false"]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
}


def multirun(sweep_dir: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m medrl.train -m ...`, W&B offline, the test model cache, output in sweep_dir."""
    env = dict(os.environ, WANDB_MODE="offline", MEDRL_CACHE_DIR=str(cache_dir))
    command = [sys.executable, "-m", "medrl.train", "-m", *overrides]
    command.append(f"hydra.sweep.dir={sweep_dir}")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "model-cache"


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_2x2_sweep_gives_four_wandb_runs_and_a_four_row_aggregate(launcher, tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = multirun(sweep, cache_dir, *SMOKE, *GRID, *LAUNCHERS[launcher])
    assert result.returncode == 0, result.stderr[-3000:]

    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    run_ids = set()
    for job in jobs:
        assert json.loads((job / "job_status.json").read_text())["status"] == "COMPLETED"
        [wandb_run] = (job / "wandb").glob("offline-run-*")  # exactly one run per job
        run_ids.add(wandb_run.name.rsplit("-", 1)[-1])
        assert (job / "csv" / "grpo" / "metrics.csv").is_file()
    assert len(run_ids) == 4, "four distinct W&B runs: nothing merged"

    with (sweep / "aggregate" / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    swept = {
        (row["reward.components.format.weight"], row["grpo.module.group_size"]) for row in rows
    }
    assert swept == {("0.5", "2"), ("0.5", "4"), ("1.0", "2"), ("1.0", "4")}
    assert all(row["n_seeds"] == "1" for row in rows)
    summary = (sweep / "aggregate" / "summary.md").read_text()
    assert "| grpo.module.group_size | reward.components.format.weight |" in summary
    assert (sweep / "aggregate" / "eval_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_a_failed_job_is_listed_in_the_aggregate_of_its_sweep(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    # group_size=1 is refused by preflight (a std-normalized advantage needs G >= 2).
    result = multirun(sweep, cache_dir, *SMOKE, "grpo.module.group_size=1,2")

    assert result.returncode != 0, "Hydra reports the failed job"
    status = json.loads((sweep / "0" / "job_status.json").read_text())
    assert status["status"] == "FAILED" and "group_size must be >= 2" in status["error"]
    summary = (sweep / "aggregate" / "summary.md").read_text()
    failed_section = summary.split("## Failed jobs", 1)[1]
    assert "grpo.module.group_size=1" in failed_section
    assert "group_size must be >= 2" in failed_section
    assert "2 jobs (1 completed" in summary


def test_the_optuna_search_maximizes_the_metric_the_entry_point_returns(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = multirun(
        sweep, cache_dir, "hparams_search=grpo_optuna", *SMOKE, "hydra.sweeper.n_trials=2"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    best = OmegaConf.load(sweep / "optimization_results.yaml")
    values = [
        json.loads((job / "results.json").read_text())["optimized_metric"]
        for job in sorted(sweep.iterdir())
        if job.name.isdigit()
    ]
    assert [v["name"] for v in values] == ["eval/accuracy"] * 2
    assert best.best_value == max(v["value"] for v in values)
    assert set(best.best_params) == {
        "grpo.module.lr",
        "grpo.module.group_size",
        "grpo.module.kl.beta",
    }
    assert (sweep / "aggregate" / "summary.md").is_file()
