"""results.json: what a finished run hands to sweeps (`medrl.aggregate`) and to people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from medrl.stages.context import StagePoint
from medrl.utils.io import write_atomic


def write_results(
    output_dir: Path,
    cfg: DictConfig,
    chain: Sequence[StagePoint],
    metrics: dict[str, float],
    value: float | None,
) -> Path:
    """results.json in the run folder: what `medrl.aggregate` reads from every job.

    metrics:          the final metrics of every stage (eval/<metric> = the last point's)
    optimized_metric: its name and value (what the entry point returned to the sweeper)
    chain:            the points in order, the last one being the run's product
    predictions:      {point: predictions file relative to the run folder} for paired tests
    """
    predictions = {
        point.name: f"eval/{point.name}/predictions.jsonl"
        for point in chain
        if (output_dir / "eval" / point.name / "predictions.jsonl").is_file()
    }
    payload = {
        "metrics": metrics,
        "optimized_metric": {"name": cfg.optimized_metric, "value": value},
        "chain": [point.name for point in chain],
        "predictions": predictions,
    }
    return write_atomic(output_dir / "results.json", json.dumps(payload, indent=2))
