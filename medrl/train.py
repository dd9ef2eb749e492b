"""Hydra entry point: `python -m medrl.train [overrides]` (`--cfg job` prints the composition).

The run: check that every requested stage exists (a runner, or a stage defined with its own
data under `stage_defs`: medrl.stages.plan), start the other processes when the trainer asks for
several devices (medrl.distributed), instantiate each stage's pieces in one place
(medrl.components), seed, then run the stages in order, each starting from the previous stage's
checkpoint. Returns `optimized_metric` for sweepers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from medrl import distributed
from medrl.components import RunSpecs, build_pools, build_specs
from medrl.data import DatasetPools
from medrl.data.mixture import exclude_eval_questions
from medrl.preflight import preflight_config, run_preflight
from medrl.stages.context import RunContext, StageOutcome, StagePoint
from medrl.stages.evaluate import check_mode, check_point_names, eval_sampling, run_eval
from medrl.stages.grpo import run_grpo
from medrl.stages.plan import Stage, runners_of, stage_plan
from medrl.stages.results import write_results
from medrl.stages.resume import continue_in, resume_folder
from medrl.stages.sft import run_sft
from medrl.stages.start import base_point, finished_stage
from medrl.utils.config import CONFIG_DIR
from medrl.utils.packages import write_packages
from medrl.utils.tracking import close_wandb_run

log = logging.getLogger(__name__)

StageRunner = Callable[[RunContext, Sequence[StagePoint]], StageOutcome]
# Runner name (medrl.stages.plan.RUNNERS) -> runner. A runner gets the chain so far and returns
# its checkpoint (or None).
STAGE_RUNNERS: dict[str, StageRunner] = {"sft": run_sft, "grpo": run_grpo, "eval": run_eval}


@dataclass(frozen=True)
class StageSetup:
    """A stage with its instantiated pieces: the specs and pools of its own config."""

    stage: Stage
    specs: RunSpecs
    pools: DatasetPools


def run(cfg: DictConfig) -> float | None:
    """Run `cfg.stages` and return the value of `cfg.optimized_metric` (None if not produced)."""
    stage_plan(cfg)  # a bad stage name or definition fails before anything else
    resume = resume_folder(cfg)  # before any work: a bad `resume` fails now
    if resume is not None:
        continue_in(cfg, resume)
    plan = stage_plan(cfg)  # the stages' configs, as continue_in left the run's
    check_configs(plan)  # the config's own values, all failures at once, before building
    distributed.launch(cfg.trainer)  # every process runs the rest; rank zero writes files
    specs = [build_specs(stage.cfg) for stage in plan]
    for stage, spec in zip(plan, specs, strict=True):
        if stage.runner == "eval":  # evaluation.mode against the format, before any training
            check_mode(stage.cfg.evaluation, spec.output_format)
    pl.seed_everything(cfg.seed, workers=True)
    setups = build_setups(plan, specs)
    preflight_stages(cfg, setups)  # data, rewards, prompt lengths; still no weights loaded
    output_dir = Path(cfg.paths.output_dir)
    with distributed.rank_zero_writes() as writer:
        if writer:  # the installs this run is made with, to reinstall them (README)
            write_packages(output_dir)
    chain = [base_point(specs[0].model, cfg.get("init_from"))]
    metrics: dict[str, float] = {}
    failed = True
    try:
        for setup in setups:
            ctx = stage_context(setup, output_dir, resuming=resume is not None)
            outcome = finished_stage(ctx, setup.stage.name)
            if outcome is None:
                log.info("stage %s starts from %s", setup.stage.name, chain[-1].name)
                outcome = STAGE_RUNNERS[setup.stage.runner](ctx, chain)
            metrics.update(outcome.metrics)
            if outcome.point is not None:
                chain.append(outcome.point)
        failed = False
    finally:
        close_wandb_run(failed)
    value = metrics.get(cfg.optimized_metric)
    with distributed.rank_zero_writes() as writer:
        if writer:
            write_results(output_dir, cfg, chain, metrics, value)
    log.info("run finished; outputs in %s", output_dir)
    return value


def check_configs(plan: Sequence[Stage]) -> None:
    """Each stage's config values (preflight checks 1-4) and evaluation settings."""
    chain = ["base", *(stage.name for stage in plan if stage.runner != "eval")]
    for stage in plan:
        preflight_config(stage.cfg, [stage.runner])
        if stage.runner == "eval":  # these fail now, not after the training stages
            eval_sampling(stage.cfg.evaluation)
            # (with init_from the first point is named by its checkpoint: run_eval checks)
            if stage.cfg.evaluation.get("points") is not None and not stage.cfg.get("init_from"):
                check_point_names(list(stage.cfg.evaluation.points), chain)


def build_setups(plan: Sequence[Stage], specs: Sequence[RunSpecs]) -> list[StageSetup]:
    """Each stage's pools: stages with the same dataset config share one load, and every
    training pool is cleared of the questions of every eval pool in the run."""
    loaded: dict[str, DatasetPools] = {}
    for stage, spec in zip(plan, specs, strict=True):
        key = _dataset_key(stage)
        if key not in loaded:
            loaded[key] = build_pools(spec)
    separated = dict(zip(loaded, exclude_eval_questions(list(loaded.values())), strict=True))
    return [
        StageSetup(stage, spec, separated[_dataset_key(stage)])
        for stage, spec in zip(plan, specs, strict=True)
    ]


def _dataset_key(stage: Stage) -> str:
    return OmegaConf.to_yaml(stage.cfg.dataset, resolve=True)


def preflight_stages(cfg: DictConfig, setups: Sequence[StageSetup]) -> None:
    """Preflight (medrl.preflight) of the stages that read the run's groups, together
    (preflight.json), then of each stage with its own definition (preflight-<stage>.json)."""
    plain = [setup for setup in setups if not setup.stage.defined]
    if plain:
        runners = runners_of([setup.stage for setup in plain])
        run_preflight(cfg, plain[0].specs, plain[0].pools, stages=runners)
    for setup in setups:
        if setup.stage.defined:
            stage = setup.stage
            run_preflight(
                stage.cfg, setup.specs, setup.pools, stages=[stage.runner], name=stage.name
            )


def stage_context(setup: StageSetup, output_dir: Path, resuming: bool) -> RunContext:
    return RunContext(
        cfg=setup.stage.cfg,
        specs=setup.specs,
        pools=setup.pools,
        output_dir=output_dir,
        resuming=resuming,
        stage=setup.stage.name,
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
