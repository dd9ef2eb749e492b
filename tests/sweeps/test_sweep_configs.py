"""Launcher configs and the studies' sweep definitions compose (nothing is launched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medrl.utils.config import CONFIG_DIR, PROJECT_ROOT

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
    """`--cfg <part>` of a study's sweep definition (-cd <its folder> -cn <its name>), as the
    command line prints it (a subprocess: the real entry point, about 12 s)."""
    command = [sys.executable, "-m", "medrl.train", "-cd", str(sweep.parent), "-cn", sweep.stem]
    command += [*overrides, "--cfg", part]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return OmegaConf.create(result.stdout)


def composed_here(sweep: Path, *overrides: str):
    """The same composition in this process (Hydra's compose API, the sweep's folder first on
    the search path as -cd puts it): the job config and the `hydra` node, in milliseconds."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(sweep.parent), version_base="1.3"):
        cfg = compose(
            sweep.stem,
            overrides=[f"hydra.searchpath=[file://{CONFIG_DIR}]", *overrides],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    return cfg


@pytest.mark.parametrize("sweep", STUDIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_study_sweep_composes_and_declares_its_grid_and_baseline(sweep):
    cfg = composed_here(sweep, "init_from=/some/sft/checkpoint")
    params = cfg.hydra.sweeper.params
    assert cfg.task_name.startswith("study_") and cfg.run_group == cfg.task_name
    assert "seed" in params, "studies replicate over seeds"
    baseline_keys = {override.split("=", 1)[0] for override in cfg.aggregate.baseline}
    assert baseline_keys <= set(params), "the baseline names swept values"
    assert (sweep.parent / "README.md").is_file()


def test_a_study_sweep_composes_on_the_command_line_as_in_process():
    """One study through the real entry point: -cd / -cn give what the in-process
    composition above checks (so those checks hold for `make study` too)."""
    sweep = PROJECT_ROOT / "experiments" / "sft_vs_grpo" / "sweep.yaml"
    job = composed(sweep, "job", "init_from=/some/sft/checkpoint")
    here = OmegaConf.to_container(composed_here(sweep, "init_from=/some/sft/checkpoint"))
    sweeper_params = here.pop("hydra")["sweeper"]["params"]
    assert OmegaConf.to_container(job) == here
    assert OmegaConf.to_container(composed(sweep, "hydra").hydra.sweeper.params) == sweeper_params


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
