"""What every stage runner receives: the run's objects, its output folder, and the stage chain."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from medrl.algorithms.numeric_faults import NumericFaultSettings
from medrl.checkpoints.training_state import (
    AtomicCheckpointIO,
    CheckpointingSettings,
    TrainingStateCheckpoint,
)
from medrl.components import RunSpecs
from medrl.data import DatasetPools
from medrl.distributed import is_rank_zero
from medrl.evaluation.validation import ValidationSettings
from medrl.models import ModelSpec
from medrl.prompts.base import OutputFormat
from medrl.rollout.settings import EngineSettings
from medrl.stages.resume import fingerprint, training_checkpoint, training_state_dir
from medrl.utils.io import write_atomic
from medrl.utils.settings import SettingsBlock, raise_errors

WANDB_ID_FILE = "wandb_run_id"
log = logging.getLogger(__name__)
# The top-level blocks both training stages read, each a settings block that checks itself.
TRAINING_BLOCKS: tuple[type[SettingsBlock], ...] = (
    CheckpointingSettings,
    NumericFaultSettings,
    EngineSettings,
    ValidationSettings,
)


def check_training_blocks(cfg: DictConfig) -> None:
    """Raise on the training blocks' problems (their one validation; preflight reports the
    same), before a training stage loads any weights."""
    for block in TRAINING_BLOCKS:
        values = OmegaConf.to_container(cfg[block.BLOCK], resolve=True)
        raise_errors(block.check(values), f"{block.BLOCK}.")


@dataclass(frozen=True)
class StagePoint:
    """A policy in the stage chain: the model the run starts from, or a stage's checkpoint.

    name:          "base" for the starting model, else the stage that produced the checkpoint.
    model_spec:    how to load its weights (source "checkpoint" for stage checkpoints).
    checkpoint:    the stage checkpoint folder; None for a base model.
    root_model:    the model at the root of the chain (recorded in every manifest).
    output_format: the format the point was trained for, when this run's config says it (a
                   stage with its own format, medrl.stages.plan); None: unknown (a base model,
                   an `init_from` folder), and a checkpoint must then match the loading stage's.
    """

    name: str
    model_spec: ModelSpec
    checkpoint: Path | None
    root_model: str
    output_format: OutputFormat | None = None


@dataclass(frozen=True)
class StageOutcome:
    """A stage's result: the new point in the chain (None for evaluation) and final metrics."""

    point: StagePoint | None
    metrics: dict[str, float] = field(default_factory=dict)


def job_name(cfg: DictConfig) -> str:
    """A readable run name: the job's command-line overrides ("seed=1,grpo.module.group_size=8"
    in a sweep), else the task name."""
    overrides = OmegaConf.select(cfg, "hydra.job.override_dirname", default=None)
    if overrides is None and HydraConfig.initialized():
        overrides = HydraConfig.get().job.override_dirname
    return overrides or str(cfg.get("task_name", "medrl"))


@dataclass
class RunContext:
    """The run's instantiated pieces. Runners read `cfg` only for their own stage's block."""

    cfg: DictConfig
    specs: RunSpecs
    pools: DatasetPools
    output_dir: Path
    # True when continuing a killed run (medrl.stages.resume): finished stages are reused and
    # a stage in progress continues from its training-state checkpoint.
    resuming: bool = False
    # The stage being run (medrl.stages.plan): its checkpoint folder, training-state folder and
    # logger version. Empty: the runner's own name (sft, grpo, eval).
    stage: str = ""
    # The eval stage's benchmarks (evaluation.benchmarks): name -> its dataset's pools, whose
    # eval pool every point is scored on; None: the run's own eval pool only.
    benchmarks: Mapping[str, DatasetPools] | None = None

    def stage_name(self, runner: str) -> str:
        return self.stage or runner

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def resolved_config(self) -> str:
        return OmegaConf.to_yaml(self.cfg, resolve=True)

    def loggers(self, stage: str, version: str | None = None) -> list[Any]:
        """Fresh loggers for one stage, each sent the resolved config.

        File loggers that take a version (CSV, TensorBoard) write one folder per stage (or per
        `version`: a resumed stage logs beside, never over, what the killed run wrote). W&B gets
        one run per job: every stage's WandbLogger reuses the job's open run (Lightning attaches
        to `wandb.run`), its keys prefixed with the stage ("sft-train/loss") so stages never
        share a chart; the run is closed by `close_wandb_run` when the job ends. A resumed job
        continues the W&B run of the job it resumes (its id is kept in the run folder).
        """
        loggers = []
        for node in (self.cfg.get("logger") or {}).values():
            target = get_object(node._target_)
            if issubclass(target, WandbLogger):
                logger = instantiate(node, **self._wandb_kwargs(node, stage))
                if is_rank_zero():  # the other ranks' W&B logger is a no-op placeholder
                    write_atomic(self.output_dir / WANDB_ID_FILE, logger.experiment.id)
            elif "version" in inspect.signature(target).parameters:
                logger = instantiate(node, version=version or stage)
            else:
                logger = instantiate(node)
            logger.log_hyperparams(OmegaConf.to_container(self.cfg, resolve=True))
            loggers.append(logger)
        return loggers

    def _wandb_kwargs(self, node: DictConfig, stage: str) -> dict[str, Any]:
        # The eval stage's keys are already namespaced (eval/...).
        kwargs: dict[str, Any] = {"prefix": "" if stage == "eval" else stage}
        if not node.get("name"):
            kwargs["name"] = job_name(self.cfg)
        id_file = self.output_dir / WANDB_ID_FILE
        if self.resuming and id_file.is_file() and not node.get("id"):
            kwargs["id"] = id_file.read_text().strip()  # Lightning passes resume="allow"
        return kwargs

    def trainer(self, stage: str, **kwargs: Any) -> pl.Trainer:
        """The configured Lightning Trainer with this stage's loggers, callbacks and `kwargs`."""
        return self._build_trainer(stage, **kwargs)

    def training_trainer(
        self, stage: str, callbacks: Sequence[pl.Callback] = (), **kwargs: Any
    ) -> tuple[pl.Trainer, Path | None]:
        """A Trainer for a training stage that writes training-state checkpoints, and the
        checkpoint to continue from when resuming (None: start the stage from its beginning).
        `callbacks` (the stage's validation) run before the training-state saver, so a saved
        state includes what they did at that step.
        """
        values = OmegaConf.to_container(self.cfg.checkpointing, resolve=True)
        settings = CheckpointingSettings.from_values(values)
        resume_from = training_checkpoint(self.output_dir, stage) if self.resuming else None
        version = None
        if resume_from is not None:
            log.info("stage %s continues from its training state %s", stage, resume_from)
            version = _resumed_version(self.output_dir, stage)
        saver = TrainingStateCheckpoint(
            training_state_dir(self.output_dir, stage),
            settings.every_n_steps,
            settings.keep_last,
            fingerprint(self.cfg),
        )
        trainer = self._build_trainer(
            stage, version, [*callbacks, saver], plugins=[AtomicCheckpointIO()], **kwargs
        )
        return trainer, resume_from

    def _build_trainer(
        self,
        stage: str,
        version: str | None = None,
        extra_callbacks: Sequence[pl.Callback] = (),
        **kwargs: Any,
    ) -> pl.Trainer:
        callbacks = [instantiate(node) for node in (self.cfg.get("callbacks") or {}).values()]
        return instantiate(
            self.cfg.trainer,
            logger=self.loggers(stage, version) or False,
            callbacks=[*callbacks, *extra_callbacks],
            # medrl shards its own data (the same global batches on any number of processes);
            # Lightning's sampler replacement would re-instantiate its loaders.
            use_distributed_sampler=False,
            **kwargs,
        )


def _resumed_version(output_dir: Path, stage: str) -> str:
    """A fresh logger version for a resumed stage: <stage>_resumed, <stage>_resumed2, ..."""
    for attempt in range(1, 1000):
        version = f"{stage}_resumed" + (str(attempt) if attempt > 1 else "")
        if not any(output_dir.glob(f"*/{version}")):
            return version
    raise RuntimeError(f"too many resumed versions of stage {stage} in {output_dir}")
