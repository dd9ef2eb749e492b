"""Hydra callbacks: JobStatus writes job_status.json and closes W&B after every job;
AggregateOnMultirunEnd writes the sweep summary and never crashes the end of a sweep."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn
from hydra.core.utils import JobStatus as HydraJobStatus
from omegaconf import OmegaConf

from medrl.sweeps.callbacks import AggregateOnMultirunEnd, JobStatus


def job_config(output_dir: Path):
    """The config Hydra passes to on_job_end: the job config plus its hydra node."""
    return OmegaConf.create({"seed": 1, "hydra": {"runtime": {"output_dir": str(output_dir)}}})


def read_status(folder: Path) -> dict:
    return json.loads((folder / "job_status.json").read_text())


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in `wandb` module in sys.modules with an open run that records finish()."""
    module = types.SimpleNamespace(run=object(), finished=[])

    def finish(exit_code: int = 0) -> None:
        module.finished.append(exit_code)
        module.run = None

    module.finish = finish
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_job_status_completed(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "wandb", raising=False)  # W&B never imported: nothing to do
    job_return = JobReturn(status=HydraJobStatus.COMPLETED, _return_value=0.5)
    JobStatus().on_job_end(job_config(tmp_path), job_return)
    assert read_status(tmp_path) == {"status": "COMPLETED", "error": None}
    assert "wandb" not in sys.modules


def test_job_status_failed_records_the_exception_and_closes_wandb(tmp_path, fake_wandb):
    error = RuntimeError("CUDA out of memory")
    job_return = JobReturn(status=HydraJobStatus.FAILED, _return_value=error)
    JobStatus().on_job_end(job_config(tmp_path), job_return)
    assert read_status(tmp_path) == {
        "status": "FAILED",
        "error": "RuntimeError: CUDA out of memory",
    }
    assert fake_wandb.finished == [1]  # a failed job's run ends with exit code 1


def test_job_status_closes_a_completed_jobs_wandb_run_with_exit_code_0(tmp_path, fake_wandb):
    JobStatus().on_job_end(job_config(tmp_path), JobReturn(status=HydraJobStatus.COMPLETED))
    assert fake_wandb.finished == [0]
    fake_wandb.finished.clear()
    JobStatus().on_job_end(job_config(tmp_path), JobReturn(status=HydraJobStatus.COMPLETED))
    assert fake_wandb.finished == []  # no open run: finish is not called


def test_job_status_uses_the_output_dir_not_the_working_dir(tmp_path):
    # With hydra.job.chdir=false, working_dir is the launcher's cwd, shared by all jobs.
    job_return = JobReturn(status=HydraJobStatus.COMPLETED, working_dir=str(tmp_path / "cwd"))
    JobStatus().on_job_end(job_config(tmp_path / "job"), job_return)
    assert read_status(tmp_path / "job")["status"] == "COMPLETED"
    assert not (tmp_path / "cwd").exists()


def write_completed_job(sweep: Path, num: int, accuracy: float) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"lr={num}", "seed=1"]), job / ".hydra" / "overrides.yaml")
    results = {"metrics": {"eval/accuracy": accuracy}, "chain": ["base"], "predictions": {}}
    results["optimized_metric"] = {"name": "eval/accuracy", "value": accuracy}
    (job / "results.json").write_text(json.dumps(results))


def sweep_config(sweep: Path, **aggregate):
    config = {"hydra": {"sweep": {"dir": str(sweep), "subdir": "${hydra.job.num}"}}}
    if aggregate:
        config["aggregate"] = aggregate
    return OmegaConf.create(config)


def test_aggregate_on_multirun_end_writes_the_summary(tmp_path, caplog):
    for num, accuracy in enumerate([0.2, 0.4]):
        write_completed_job(tmp_path, num, accuracy)
    config = sweep_config(tmp_path, metrics=["eval/accuracy"], baseline=None, direction="minimize")
    with caplog.at_level(logging.INFO, logger="medrl.sweeps.callbacks"):
        AggregateOnMultirunEnd().on_multirun_end(config)
    summary = tmp_path / "aggregate" / "summary.md"
    assert "| 0 | 1 | 0.200 [n/a] | best |" in summary.read_text()  # minimize, from config
    assert str(summary) in caplog.text


def test_aggregate_on_multirun_end_logs_and_does_not_raise(tmp_path, caplog):
    (tmp_path / "not-a-job").mkdir()
    with caplog.at_level(logging.ERROR, logger="medrl.sweeps.callbacks"):
        AggregateOnMultirunEnd().on_multirun_end(sweep_config(tmp_path))
    assert f"aggregating sweep {tmp_path} failed" in caplog.text
    assert f"no job folders in {tmp_path}" in caplog.text  # the reason, from the traceback
    assert not (tmp_path / "aggregate").exists()


def multirun_job_config(sweep: Path, num: int, **aggregate):
    """What on_job_end gets inside a multirun: the job's output dir and the sweep's settings."""
    config = sweep_config(sweep, **aggregate)
    config.hydra.mode = "MULTIRUN"
    config.hydra.runtime = {"output_dir": str(sweep / str(num))}
    return config


def test_every_multirun_job_refreshes_the_aggregate_even_before_the_baseline_ran(tmp_path):
    write_completed_job(tmp_path, 0, 0.2)  # lr=0; the baseline lr=1 has not run yet
    done = JobReturn(status=HydraJobStatus.COMPLETED)
    JobStatus().on_job_end(multirun_job_config(tmp_path, 0, baseline=["lr=1"]), done)
    summary = (tmp_path / "aggregate" / "summary.md").read_text()
    assert "1 jobs (1 completed)" in summary and "Baseline" not in summary

    write_completed_job(tmp_path, 1, 0.4)
    JobStatus().on_job_end(multirun_job_config(tmp_path, 1, baseline=["lr=1"]), done)
    summary = (tmp_path / "aggregate" / "summary.md").read_text()
    assert "2 jobs (2 completed)" in summary and "Baseline `lr=1`" in summary


def test_a_baseline_matching_no_group_is_an_error_once_the_sweep_has_ended(tmp_path, caplog):
    write_completed_job(tmp_path, 0, 0.2)
    with caplog.at_level(logging.ERROR, logger="medrl.sweeps.callbacks"):
        AggregateOnMultirunEnd().on_multirun_end(sweep_config(tmp_path, baseline=["lr=7"]))
    assert "baseline ['lr=7'] matches no group" in caplog.text
