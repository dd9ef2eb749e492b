"""Hydra entry point: `python -m medrl.eval checkpoints=[dir,...]` evaluates the base model and
stage checkpoints on the same evaluation items, with the eval stage of medrl.train (sharded
over the processes when `trainer` asks for several devices, e.g. trainer=ddp): the dataset's
eval pool, or each of evaluation.benchmarks' (checked, before any checkpoint loads, against
what the checkpoints' lineages trained on)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from medrl import distributed
from medrl.components import (
    build_benchmarks,
    build_pools,
    build_specs,
    dataset_key,
    load_benchmarks,
)
from medrl.preflight import run_preflight
from medrl.stages.benchmarks import (
    benchmark_records,
    check_benchmark_format,
    check_benchmark_records,
)
from medrl.stages.context import RunContext, StagePoint
from medrl.stages.evaluate import check_mode, eval_sampling, run_eval
from medrl.stages.results import write_results
from medrl.stages.start import base_point, checkpoint_point
from medrl.utils.config import CONFIG_DIR
from medrl.utils.tracking import close_wandb_run

log = logging.getLogger(__name__)


def unique_names(points: list[StagePoint]) -> list[StagePoint]:
    """Points named by their stage; repeated names (two "sft" checkpoints) get -2, -3, ..."""
    seen: Counter[str] = Counter()
    named = []
    for point in points:
        seen[point.name] += 1
        count = seen[point.name]
        named.append(point if count == 1 else replace(point, name=f"{point.name}-{count}"))
    return named


def run(cfg: DictConfig) -> float | None:
    """Evaluate `cfg.checkpoints` (after the base model when evaluation.include_base), on the
    run's eval pool or on every benchmark of evaluation.benchmarks."""
    eval_sampling(cfg.evaluation)
    specs = build_specs(cfg)
    check_mode(cfg.evaluation, specs.output_format)  # forced choice needs a closed format
    benchmark_specs = build_benchmarks(cfg)  # names and dataset configs, before any data
    if benchmark_specs is not None:
        datasets = {name: b.dataset for name, b in benchmark_specs.items()}
        check_benchmark_format(datasets, specs.output_format)
    folders = [Path(folder) for folder in cfg.checkpoints]
    missing = [str(folder) for folder in folders if not (folder / "manifest.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"checkpoints: not medrl stage checkpoints (no manifest): {missing}"
        )
    distributed.launch(cfg.trainer)  # every process evaluates its share; rank zero writes
    pl.seed_everything(cfg.seed)
    pools = build_pools(specs)
    benchmarks = scored = None
    if benchmark_specs is not None:
        benchmarks = load_benchmarks(benchmark_specs, {dataset_key(cfg.dataset): pools})
        scored = benchmark_records(benchmarks, cfg.evaluation.limit)
        check_benchmark_records(specs.output_format, scored)
    # Before any checkpoint loads; with benchmarks, also against what the checkpoints trained on.
    run_preflight(cfg, specs, pools, stages=["eval"], benchmarks=scored, checkpoints=folders)
    ctx = RunContext(
        cfg=cfg,
        specs=specs,
        pools=pools,
        output_dir=Path(cfg.paths.output_dir),
        benchmarks=benchmarks,
    )
    chain = unique_names(
        [base_point(specs.model)] + [checkpoint_point(f, specs.model) for f in folders]
    )
    failed = True
    try:
        metrics = run_eval(ctx, chain).metrics
        failed = False
    finally:
        close_wandb_run(failed)
    value = metrics.get(cfg.optimized_metric)
    if distributed.is_rank_zero():  # sweeps of medrl.eval aggregate results.json too
        write_results(ctx.output_dir, cfg, chain, metrics, value)
    log.info("report: %s", ctx.output_dir / "eval" / "report.md")
    return value


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
