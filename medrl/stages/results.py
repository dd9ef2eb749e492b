"""results.json: what a finished run hands to sweeps (`medrl.aggregate`) and to people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medrl.evaluation.settings import benchmark_names
from medrl.stages.context import StagePoint
from medrl.utils.io import write_atomic


def write_results(
    output_dir: Path,
    cfg: DictConfig,
    chain: Sequence[StagePoint],
    metrics: dict[str, float],
    value: float | None,
    evaluation: DictConfig | None = None,
) -> Path:
    """results.json in the run folder: what `medrl.aggregate` reads from every job.

    metrics:          the final metrics of every stage (eval/<metric> = the last point's)
    optimized_metric: its name and value (what the entry point returned to the sweeper)
    chain:            the points in order, the last one being the run's product
    predictions:      {point: predictions file relative to the run folder} for paired tests;
                      with evaluation.benchmarks, the headline's (the first benchmark's), and
    benchmark_predictions: {benchmark: {point: file}}, with evaluation.benchmarks only

    evaluation: the eval stage's `evaluation` block when a stage definition gives it its own
    (medrl.stages.plan); default: cfg's.
    """
    block = evaluation if evaluation is not None else cfg.get("evaluation")
    benchmarks = benchmark_names(values_of(block))
    predictions = _predictions(output_dir, chain, benchmarks[0] if benchmarks else None)
    payload = {
        "metrics": metrics,
        "optimized_metric": {"name": cfg.optimized_metric, "value": value},
        "chain": [point.name for point in chain],
        "predictions": predictions,
    }
    if benchmarks:
        payload["benchmark_predictions"] = {
            name: _predictions(output_dir, chain, name) for name in benchmarks
        }
    return write_atomic(output_dir / "results.json", json.dumps(payload, indent=2))


def _predictions(
    output_dir: Path, chain: Sequence[StagePoint], benchmark: str | None
) -> dict[str, str]:
    """{point: its predictions file relative to the run folder} for the points that have one:
    eval/<point>/predictions.jsonl, or eval/<benchmark>/<point>/predictions.jsonl."""
    folder = Path("eval", benchmark) if benchmark else Path("eval")
    return {
        point.name: (folder / point.name / "predictions.jsonl").as_posix()
        for point in chain
        if (output_dir / folder / point.name / "predictions.jsonl").is_file()
    }


def values_of(node: DictConfig | None) -> dict:
    """A config block as plain values ({} when absent)."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}
