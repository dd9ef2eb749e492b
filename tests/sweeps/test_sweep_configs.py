"""Launcher configs and the studies' sweep definitions compose (nothing is launched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medrl.utils.config import PROJECT_ROOT

STUDIES = sorted((PROJECT_ROOT / "experiments").glob("*/sweep*.yaml"))


def hydra_config(*overrides: str):
    """The composed `hydra` node of `python -m medrl.train`, as `--cfg hydra` prints it."""
    command = [sys.executable, "-m", "medrl.train", *overrides, "--cfg", "hydra"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return OmegaConf.create(result.stdout).hydra


def test_slurm_gpu_extends_the_submitit_slurm_launcher_with_one_gpu_per_job():
    launcher = hydra_config("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu").launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition) == (1, 1, "gpu")


def test_slurm_ddp_gives_each_job_one_task_per_gpu_on_one_node():
    launcher = hydra_config(
        "hydra/launcher=slurm_ddp", "hydra.launcher.partition=gpu", "trainer=ddp"
    ).launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 1)


def test_every_job_reports_its_status_and_the_sweep_aggregates_itself():
    callbacks = hydra_config().callbacks
    assert callbacks.job_status._target_ == "medrl.sweeps.callbacks.JobStatus"
    assert callbacks.aggregate._target_ == "medrl.sweeps.callbacks.AggregateOnMultirunEnd"


def composed(sweep: Path, part: str, *overrides: str):
    """`--cfg <part>` of a study's sweep definition (-cd <its folder> -cn <its name>)."""
    command = [sys.executable, "-m", "medrl.train", "-cd", str(sweep.parent), "-cn", sweep.stem]
    command += [*overrides, "--cfg", part]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return OmegaConf.create(result.stdout)


@pytest.mark.parametrize("sweep", STUDIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_study_sweep_composes_and_declares_its_grid_and_baseline(sweep):
    job = composed(sweep, "job", "init_from=/some/sft/checkpoint")
    params = composed(sweep, "hydra").hydra.sweeper.params
    assert job.task_name.startswith("study_") and job.run_group == job.task_name
    assert "seed" in params, "studies replicate over seeds"
    baseline_keys = {override.split("=", 1)[0] for override in job.aggregate.baseline}
    assert baseline_keys <= set(params), "the baseline names swept values"
    assert (sweep.parent / "README.md").is_file()


def test_the_studies_are_the_designs_three_the_grpo_variants_and_the_curriculum():
    # A study whose sweep is renamed or deleted would silently drop out of the parametrized
    # test above; this names the full list so that it cannot.
    assert {p.parent.name for p in STUDIES} == {
        "reward_weights_x_group_size",
        "sft_vs_grpo",
        "model_sizes",
        "grpo_variants",
        "curriculum",
    }
