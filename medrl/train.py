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
from omegaconf import DictConfig

from medrl import distributed
from medrl.components import (
    BenchmarkSpec,
    RunSpecs,
    build_benchmarks,
    build_pools,
    build_specs,
    dataset_key,
    load_benchmarks,
)
from medrl.data import DatasetPools
from medrl.data.mixture import exclude_eval_questions
from medrl.data.records import QARecord
from medrl.preflight import preflight_config, run_preflight
from medrl.preflight.benchmarks import TrainedOn
from medrl.stages.benchmarks import (
    benchmark_records,
    check_benchmark_format,
    check_benchmark_records,
)
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
    """A stage with its instantiated pieces: the specs and pools of its own config, and for an
    eval stage with evaluation.benchmarks, each benchmark's pools."""

    stage: Stage
    specs: RunSpecs
    pools: DatasetPools
    benchmarks: dict[str, DatasetPools] | None = None


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
    benchmarks = [eval_benchmarks(stage, spec) for stage, spec in zip(plan, specs, strict=True)]
    pl.seed_everything(cfg.seed, workers=True)
    setups = build_setups(plan, specs, benchmarks)
    for setup in setups:  # the benchmarks' items suit the format, before any training
        if setup.benchmarks is not None:
            check_benchmark_records(setup.specs.output_format, scored_items(setup))
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
            evaluation = next((s.cfg.evaluation for s in plan if s.runner == "eval"), None)
            write_results(output_dir, cfg, chain, metrics, value, evaluation)
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


def eval_benchmarks(stage: Stage, spec: RunSpecs) -> dict[str, BenchmarkSpec] | None:
    """An eval stage's evaluation.mode checked against its format, and its benchmarks'
    specs checked too (a closed format needs labelled datasets), before any data or training;
    None for other stages and for evaluation.benchmarks=null."""
    if stage.runner != "eval":
        return None
    check_mode(stage.cfg.evaluation, spec.output_format)
    benchmarks = build_benchmarks(stage.cfg)
    if benchmarks is not None:
        datasets = {name: b.dataset for name, b in benchmarks.items()}
        check_benchmark_format(datasets, spec.output_format)
    return benchmarks


def build_setups(
    plan: Sequence[Stage],
    specs: Sequence[RunSpecs],
    benchmarks: Sequence[dict[str, BenchmarkSpec] | None] | None = None,
) -> list[StageSetup]:
    """Each stage's pools (and an eval stage's benchmarks' pools): stages and benchmarks with
    the same dataset config share one load, and every training pool is cleared of the
    questions of every eval pool in the run, the benchmarks' included."""
    benchmarks = benchmarks or [None] * len(plan)
    loaded: dict[str, DatasetPools] = {}
    for stage, spec in zip(plan, specs, strict=True):
        key = dataset_key(stage.cfg.dataset)
        if key not in loaded:
            loaded[key] = build_pools(spec)
    for chosen in benchmarks:
        if chosen is not None:
            load_benchmarks(chosen, loaded)
    separated = dict(zip(loaded, exclude_eval_questions(list(loaded.values())), strict=True))
    return [
        StageSetup(
            stage,
            spec,
            separated[dataset_key(stage.cfg.dataset)],
            None
            if chosen is None
            else {name: separated[dataset_key(b.config)] for name, b in chosen.items()},
        )
        for stage, spec, chosen in zip(plan, specs, benchmarks, strict=True)
    ]


def scored_items(setup: StageSetup) -> dict[str, list[QARecord]] | None:
    """The items an eval stage with benchmarks scores (each benchmark's first
    evaluation.limit), or None."""
    if setup.benchmarks is None:
        return None
    return benchmark_records(setup.benchmarks, setup.stage.cfg.evaluation.limit)


def training_pools(setups: Sequence[StageSetup]) -> list[TrainedOn]:
    """Every pool but the eval pool of each training stage's dataset (each dataset once):
    what the run's models may train on, or select checkpoints by."""
    trained, seen = [], set()
    for setup in setups:
        if setup.stage.runner == "eval" or id(setup.pools) in seen:
            continue
        seen.add(id(setup.pools))
        title = setup.pools.summary.title
        trained += [
            TrainedOn(f"{title} pool {name} (stage {setup.stage.name})", records)
            for name, records in setup.pools.items()
            if name != setup.pools.eval_pool
        ]
    return trained


def preflight_stages(cfg: DictConfig, setups: Sequence[StageSetup]) -> None:
    """Preflight (medrl.preflight) of the stages that read the run's groups, together
    (preflight.json), then of each stage with its own definition (preflight-<stage>.json)."""
    trained = training_pools(setups)
    plain = [setup for setup in setups if not setup.stage.defined]
    if plain:
        runners = runners_of([setup.stage for setup in plain])
        evaluating = next((s for s in plain if s.stage.runner == "eval"), None)
        benchmarks = scored_items(evaluating) if evaluating else None
        run_preflight(
            cfg,
            plain[0].specs,
            plain[0].pools,
            stages=runners,
            benchmarks=benchmarks,
            trained_on=trained,
        )
    for setup in setups:
        if setup.stage.defined:
            stage = setup.stage
            run_preflight(
                stage.cfg,
                setup.specs,
                setup.pools,
                stages=[stage.runner],
                name=stage.name,
                benchmarks=scored_items(setup),
                trained_on=trained,
            )


def stage_context(setup: StageSetup, output_dir: Path, resuming: bool) -> RunContext:
    return RunContext(
        cfg=setup.stage.cfg,
        specs=setup.specs,
        pools=setup.pools,
        output_dir=output_dir,
        resuming=resuming,
        stage=setup.stage.name,
        benchmarks=setup.benchmarks,
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
