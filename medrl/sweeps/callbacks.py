"""Hydra callbacks that make a multirun self-describing: per-job status, then the aggregate.

Register them in conf/hydra/default.yaml under `callbacks:`. Hydra calls `on_job_end` in the
job's process after the task function returned or raised, and `on_multirun_end` once in the
launching process after every job; it turns an exception in a callback into a warning, but these
callbacks log their own failures with the reason so nothing is lost in a warning stream.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.core.utils import JobStatus as HydraJobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from medrl.distributed import is_rank_zero
from medrl.sweeps.aggregate import (
    BaselineNotFound,
    Settings,
    aggregate_sweep,
    settings_from_mapping,
)
from medrl.sweeps.collect import COMPLETED, FAILED, STATUS_FILE
from medrl.utils.io import write_atomic
from medrl.utils.tracking import close_wandb_run

log = logging.getLogger(__name__)


class JobStatus(Callback):
    """Writes `job_status.json` ({"status", "error"}) into the job's output folder, closes any
    open W&B run (the next job of the sweep never logs into this one), then, in a multirun,
    refreshes the sweep's aggregate.

    Refreshing after every job is what makes the aggregate complete when a job fails: Hydra's
    sweepers re-raise a failed job's error once all jobs ran, before `on_multirun_end` would
    run. A job writes its status before taking the aggregation lock, so whichever job takes it
    last sees every status, whatever order parallel jobs (joblib, submitit) finish in.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not is_rank_zero():  # a job on several processes: rank zero reports it
            return
        failed = job_return.status != HydraJobStatus.COMPLETED
        payload = {"status": FAILED if failed else COMPLETED, "error": job_error(job_return)}
        path = job_output_dir(config, job_return) / STATUS_FILE
        write_atomic(path, json.dumps(payload, indent=2))
        close_wandb_run(failed)
        if OmegaConf.select(config, "hydra.mode") in (RunMode.MULTIRUN, "MULTIRUN"):
            aggregate_logging_errors(config, sweep_in_progress=True)


class AggregateOnMultirunEnd(Callback):
    """Runs the aggregation once more when a sweep ends without a failed job (Hydra skips this
    hook after a failure; `JobStatus` has refreshed the aggregate after every job anyway)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        aggregate_logging_errors(config)


def aggregate_logging_errors(config: DictConfig, sweep_in_progress: bool = False) -> None:
    """`aggregate_sweep` on config.hydra.sweep.dir with the config's `aggregate` block, under
    an exclusive lock (parallel jobs end together); an error is logged, not raised.

    sweep_in_progress: a baseline that matches no group yet (its jobs have not run) is not an
    error: the summary is written without paired tests, which a later refresh adds.
    """
    sweep_dir = Path(str(config.hydra.sweep.dir))
    try:
        block = OmegaConf.select(config, "aggregate")
        settings = None
        if block is not None:
            settings = settings_from_mapping(OmegaConf.to_container(block, resolve=True))
        with _sweep_lock(sweep_dir):
            try:
                result = aggregate_sweep(sweep_dir, settings)
            except BaselineNotFound:
                if not sweep_in_progress:
                    raise
                log.info("no job of the baseline group yet: paired tests come with it")
                unpaired = replace(settings or Settings(), baseline=())
                result = aggregate_sweep(sweep_dir, unpaired)
    # The jobs' own results are already on disk; a broken summary must not turn a finished
    # job or sweep into a crash. The reason and traceback go to the log, and the CLI
    # (python -m medrl.aggregate) reruns the aggregation once the cause is fixed.
    except Exception as err:
        log.error(
            "aggregating sweep %s failed (%s: %s); its job results are intact",
            sweep_dir,
            type(err).__name__,
            err,
            exc_info=True,
        )
        return
    log.info("sweep summary: %s", result.paths["summary.md"])


@contextmanager
def _sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on <sweep dir>/.aggregate.lock."""
    lock_path = sweep_dir / ".aggregate.lock"
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def job_error(job_return: JobReturn) -> str | None:
    """ "Type: message" of a failed job's exception; None for a completed job.

    Reads `_return_value`: the public `return_value` re-raises the exception of a failed job.
    """
    if job_return.status == HydraJobStatus.COMPLETED:
        return None
    error = job_return._return_value
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return None if error is None else str(error)


def job_output_dir(config: DictConfig, job_return: JobReturn) -> Path:
    """The job's output folder, hydra.runtime.output_dir.

    Not `job_return.working_dir`: with hydra.job.chdir=false (medrl's setting) that is the
    launching process's cwd, shared by every job.
    """
    for source in (config, job_return.hydra_cfg):
        value = OmegaConf.select(source, "hydra.runtime.output_dir") if source else None
        if value:
            return Path(str(value))
    return Path(HydraConfig.get().runtime.output_dir)
