"""What every stage runner receives: the run's objects, its output folder, and the stage chain."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from medrl.components import RunSpecs
from medrl.data import DatasetPools
from medrl.models import ModelSpec


@dataclass(frozen=True)
class StagePoint:
    """A policy in the stage chain: the model the run starts from, or a stage's checkpoint.

    name:        "base" for the starting model, else the stage that produced the checkpoint.
    model_spec:  how to load its weights (source "checkpoint" for stage checkpoints).
    checkpoint:  the stage checkpoint folder; None for a base model.
    root_model:  the model at the root of the chain (recorded in every manifest).
    """

    name: str
    model_spec: ModelSpec
    checkpoint: Path | None
    root_model: str


@dataclass(frozen=True)
class StageOutcome:
    """A stage's result: the new point in the chain (None for evaluation) and final metrics."""

    point: StagePoint | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunContext:
    """The run's instantiated pieces. Runners read `cfg` only for their own stage's block."""

    cfg: DictConfig
    specs: RunSpecs
    pools: DatasetPools
    output_dir: Path

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def resolved_config(self) -> str:
        return OmegaConf.to_yaml(self.cfg, resolve=True)

    def loggers(self, stage: str) -> list[Any]:
        """Fresh loggers for one stage; loggers that take a version get the stage's name."""
        loggers = []
        for node in (self.cfg.get("logger") or {}).values():
            accepts_version = "version" in inspect.signature(get_object(node._target_)).parameters
            loggers.append(instantiate(node, **({"version": stage} if accepts_version else {})))
        return loggers

    def trainer(self, stage: str, **kwargs: Any) -> pl.Trainer:
        """The configured Lightning Trainer with this stage's loggers, callbacks and `kwargs`."""
        callbacks = [instantiate(node) for node in (self.cfg.get("callbacks") or {}).values()]
        return instantiate(
            self.cfg.trainer, logger=self.loggers(stage) or False, callbacks=callbacks, **kwargs
        )
