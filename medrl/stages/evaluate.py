"""The `eval` stage: every point of the chain (base, SFT, ...) on the same evaluation items."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from medrl.checkpoints import load_checkpoint
from medrl.evaluation import (
    Prediction,
    bar_chart,
    compute_metrics,
    flat_metrics,
    paired_comparison,
    predict,
    write_markdown_report,
    write_predictions,
)
from medrl.models import FullFinetune, load_policy, resolve_dtype
from medrl.rollout import SamplingSettings
from medrl.stages.context import RunContext, StageOutcome, StagePoint

log = logging.getLogger(__name__)
POOL = "eval"


def points_to_evaluate(chain: Sequence[StagePoint], include_base: bool) -> list[StagePoint]:
    """The chain's points in order, the starting point only when `include_base`."""
    return list(chain) if include_base else list(chain[1:])


def load_for_eval(ctx: RunContext, point: StagePoint):
    """(model, tokenizer) of a point: base weights as is, checkpoints with lineage checks."""
    specs = ctx.specs
    if point.checkpoint is None:
        policy = load_policy(point.model_spec, FullFinetune())
        return policy.model, policy.tokenizer
    model, tokenizer, _ = load_checkpoint(
        point.checkpoint,
        "merged",
        output_format=specs.output_format,
        chat_template_kwargs=point.model_spec.chat_template_kwargs,
        dtype=resolve_dtype(point.model_spec.dtype),
    )
    return model, tokenizer


def run_eval(ctx: RunContext, chain: Sequence[StagePoint]) -> StageOutcome:
    """Greedy predictions for each point on the same items, saved per item; metrics with 95%
    intervals, paired comparisons of consecutive points, eval/report.md and a bar chart."""
    settings = ctx.cfg.evaluation
    records = list(ctx.pools[POOL])[: settings.limit]
    sampling = SamplingSettings(greedy=True, max_new_tokens=settings.max_new_tokens)
    out_dir = ctx.output_dir / "eval"
    predictions: dict[str, list[Prediction]] = {}
    for point in points_to_evaluate(chain, settings.include_base):
        model, tokenizer = load_for_eval(ctx, point)
        predictions[point.name] = predict(
            model,
            tokenizer,
            records,
            ctx.specs.output_format,
            point.model_spec.chat_template_kwargs,
            sampling,
            batch_size=settings.batch_size,
            progress=True,
        )
        write_predictions(out_dir / point.name / "predictions.jsonl", predictions[point.name])
    results = {
        name: compute_metrics(preds, labels=records[0].labels, seed=ctx.seed)
        for name, preds in predictions.items()
    }
    pairs = {
        f"{a} -> {b}": paired_comparison(predictions[a], predictions[b], seed=ctx.seed)
        for a, b in consecutive_pairs(list(predictions))
    }
    write_outputs(out_dir, results, pairs)
    metrics = {
        f"eval/{name}/{key}": value
        for name, result in results.items()
        for key, value in flat_metrics(result).items()
    }
    # The last point is the run's product: its metrics are also the plain eval/<metric> keys.
    metrics.update({f"eval/{k}": v for k, v in flat_metrics(results[chain[-1].name]).items()})
    _log(ctx, metrics)
    return StageOutcome(None, metrics)


def consecutive_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Each point against the one before it, and the first against the last when they differ."""
    pairs = list(itertools.pairwise(names))
    if len(names) > 2:
        pairs.append((names[0], names[-1]))
    return pairs


def write_outputs(out_dir: Path, results: dict, pairs: dict) -> None:
    """summary.json (flat metrics per model), report.md and comparison.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = {name: flat_metrics(result) for name, result in results.items()}
    (out_dir / "summary.json").write_text(json.dumps(flat, indent=2))
    write_markdown_report(out_dir / "report.md", results, pairs or None)
    bar_chart(results, out_dir / "comparison.png")


def _log(ctx: RunContext, metrics: dict[str, float]) -> None:
    for logger in ctx.loggers(POOL):
        logger.log_metrics(metrics)
        logger.finalize("success")
