"""The `eval` stage: every point of the chain (base, SFT, ...) on the same evaluation items."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from medrl.checkpoints import load_checkpoint
from medrl.evaluation import predict, summarize, write_predictions
from medrl.models import FullFinetune, load_policy, resolve_dtype
from medrl.rollout import SamplingSettings
from medrl.stages.context import RunContext, StageOutcome, StagePoint

log = logging.getLogger(__name__)
POOL = "eval"
REPORT_METRICS = ("accuracy", "format_rate", "parse_fail_rate", "mean_tokens", "truncated_rate")


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
    """Greedy predictions for each point, saved per item, summarized in eval/report.md."""
    settings = ctx.cfg.evaluation
    records = list(ctx.pools[POOL])[: settings.limit]
    sampling = SamplingSettings(greedy=True, max_new_tokens=settings.max_new_tokens)
    out_dir = ctx.output_dir / "eval"
    summaries: dict[str, dict[str, float]] = {}
    for point in points_to_evaluate(chain, settings.include_base):
        model, tokenizer = load_for_eval(ctx, point)
        predictions = predict(
            model,
            tokenizer,
            records,
            ctx.specs.output_format,
            point.model_spec.chat_template_kwargs,
            sampling,
            batch_size=settings.batch_size,
            progress=True,
        )
        write_predictions(out_dir / point.name / "predictions.jsonl", predictions)
        summaries[point.name] = summarize(predictions)
        log.info("eval %s: %s", point.name, summaries[point.name])
    write_report(out_dir, summaries)
    metrics = {
        f"eval/{name}/{key}": float(value)
        for name, summary in summaries.items()
        for key, value in summary.items()
    }
    # The last point is the run's product: its metrics are also the plain eval/<metric> keys.
    metrics.update({f"eval/{k}": float(v) for k, v in summaries[chain[-1].name].items()})
    _log(ctx, metrics)
    return StageOutcome(None, metrics)


def write_report(out_dir: Path, summaries: dict[str, dict[str, float]]) -> Path:
    """summary.json and a markdown table (value [95% CI] per metric) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summaries, indent=2))
    header = "| model | n | " + " | ".join(REPORT_METRICS) + " |"
    lines = [header, "|" + " --- |" * (len(REPORT_METRICS) + 2)]
    for name, summary in summaries.items():
        cells = [_cell(summary, key) for key in REPORT_METRICS]
        lines.append(f"| {name} | {int(summary['n'])} | " + " | ".join(cells) + " |")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(summary: dict[str, float], key: str) -> str:
    low, high = summary.get(f"{key}_ci_low"), summary.get(f"{key}_ci_high")
    if low is None or high is None:
        return f"{summary[key]:.3f}"
    return f"{summary[key]:.3f} [{low:.3f}, {high:.3f}]"


def _log(ctx: RunContext, metrics: dict[str, float]) -> None:
    for logger in ctx.loggers(POOL):
        logger.log_metrics(metrics)
        logger.finalize("success")
