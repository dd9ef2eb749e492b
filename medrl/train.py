"""Hydra entry point: `python -m medrl.train [overrides]` (`--cfg job` prints the composition).

The run: check that every requested stage exists, start the other processes when the trainer
asks for several devices (medrl.distributed), instantiate the run's pieces in one place
(medrl.components), seed, then run the stages in order, each starting from the previous stage's
checkpoint. Returns `optimized_metric` for sweepers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from medrl import distributed
from medrl.components import build_pools, build_specs
from medrl.preflight import preflight_config, run_preflight
from medrl.stages.context import RunContext, StageOutcome, StagePoint
from medrl.stages.evaluate import eval_sampling, run_eval
from medrl.stages.grpo import run_grpo
from medrl.stages.results import write_results
from medrl.stages.resume import continue_in, resume_folder
from medrl.stages.sft import run_sft
from medrl.stages.start import base_point, finished_stage
from medrl.utils.config import CONFIG_DIR
from medrl.utils.tracking import close_wandb_run

log = logging.getLogger(__name__)

StageRunner = Callable[[RunContext, Sequence[StagePoint]], StageOutcome]
# Stage name -> runner. A runner gets the chain so far and returns its checkpoint (or None).
STAGE_RUNNERS: dict[str, StageRunner] = {"sft": run_sft, "grpo": run_grpo, "eval": run_eval}


def check_stages(stages: Sequence[str]) -> None:
    """Fail before any data or weights load if a stage has no runner."""
    unknown = [stage for stage in stages if stage not in STAGE_RUNNERS]
    if unknown:
        raise ValueError(
            f"stages={list(stages)}: no runner for {unknown}; "
            f"available stages: {sorted(STAGE_RUNNERS)}"
        )


def run(cfg: DictConfig) -> float | None:
    """Run `cfg.stages` and return the value of `cfg.optimized_metric` (None if not produced)."""
    check_stages(list(cfg.stages))
    resume = resume_folder(cfg)  # before any work: a bad `resume` fails now
    if resume is not None:
        continue_in(cfg, resume)
    preflight_config(cfg)  # the config's own values, all failures at once, before building
    if "eval" in cfg.stages:
        eval_sampling(cfg.evaluation)  # fails now, not after the training stages
    distributed.launch(cfg.trainer)  # every process runs the rest; rank zero writes files
    specs = build_specs(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    pools = build_pools(specs)
    run_preflight(cfg, specs, pools)  # data, rewards, prompt lengths; still no weights loaded
    ctx = RunContext(
        cfg=cfg,
        specs=specs,
        pools=pools,
        output_dir=Path(cfg.paths.output_dir),
        resuming=resume is not None,
    )
    chain = [base_point(specs.model, cfg.get("init_from"))]
    metrics: dict[str, float] = {}
    failed = True
    try:
        for stage in cfg.stages:
            outcome = finished_stage(ctx, stage)
            if outcome is None:
                log.info("stage %s starts from %s", stage, chain[-1].name)
                outcome = STAGE_RUNNERS[stage](ctx, chain)
            metrics.update(outcome.metrics)
            if outcome.point is not None:
                chain.append(outcome.point)
        failed = False
    finally:
        close_wandb_run(failed)
    value = metrics.get(cfg.optimized_metric)
    with distributed.rank_zero_writes() as writer:
        if writer:
            write_results(ctx.output_dir, cfg, chain, metrics, value)
    log.info("run finished; outputs in %s", ctx.output_dir)
    return value


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
