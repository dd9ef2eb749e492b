"""The `eval` stage: every point of the chain (base, SFT, ...) on the same evaluation items.

On several processes each rank predicts its share of the batches (medrl.evaluation.predict's
`shard`); the shards are gathered and merged in item order, so every rank holds the same
predictions a single process would have made, computes the same metrics, and rank zero writes.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medrl import distributed
from medrl.checkpoints import Manifest, load_checkpoint
from medrl.data.records import QARecord
from medrl.evaluation import (
    CHOICE_MODE,
    ChoiceSettings,
    Prediction,
    TextMetricSettings,
    bar_chart,
    chart_metrics,
    choice_metrics,
    compute_metrics,
    flat_metrics,
    majority_vote,
    merge_shards,
    open_ended_metrics,
    paired_comparison,
    per_sample_rates,
    predict,
    predict_choices,
    sampling_metrics,
    write_markdown_report,
    write_predictions,
)
from medrl.evaluation.judge_metrics import judge_metrics
from medrl.evaluation.report import (
    BenchmarkResult,
    benchmark_chart,
    write_benchmark_report,
)
from medrl.evaluation.settings import (
    EVALUATION_KEY,
    evaluation_mode,
    evaluation_problems,
    mode_problem,
)
from medrl.models import FullFinetune, load_policy, resolve_dtype
from medrl.prompts import OutputFormat, reference_text
from medrl.rollout import SamplingSettings
from medrl.stages.benchmarks import benchmark_records, check_benchmark_records
from medrl.stages.context import RunContext, StageOutcome, StagePoint
from medrl.stages.start import trained_format
from medrl.utils.settings import raise_errors

log = logging.getLogger(__name__)
POOL = "eval"


def points_to_evaluate(
    chain: Sequence[StagePoint], include_base: bool, names: Sequence[str] | None = None
) -> list[StagePoint]:
    """The chain's points in order, the starting point only when `include_base`, and only the
    points `names` lists when it is given (evaluation.points: skip a curriculum's middle
    points when only the others are compared)."""
    points = list(chain) if include_base else list(chain[1:])
    if names is None:
        return points
    check_point_names(names, [point.name for point in chain])
    chosen = [point for point in points if point.name in names]
    if not chosen:
        raise ValueError(
            f"evaluation.points={list(names)} with include_base={include_base} leaves no point "
            "to evaluate"
        )
    return chosen


def check_point_names(names: Sequence[str], available: Sequence[str]) -> None:
    """evaluation.points must name points of the chain ("base" and the training stages)."""
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"evaluation.points names {unknown}, which the chain does not have; its points: "
            f"{list(available)} (null evaluates them all)"
        )


def load_for_eval(ctx: RunContext, point: StagePoint):
    """(model, tokenizer) of a point: base weights as is, checkpoints with lineage checks
    (against the format the point was trained for: each point is then scored on this stage's
    task, the final task of a curriculum)."""
    specs = ctx.specs
    if point.checkpoint is None:
        policy = load_policy(point.model_spec, FullFinetune())
        return policy.model, policy.tokenizer
    model, tokenizer, _ = load_checkpoint(
        point.checkpoint,
        "merged",
        output_format=trained_format(point, specs.output_format),
        chat_template_kwargs=point.model_spec.chat_template_kwargs,
        dtype=resolve_dtype(point.model_spec.dtype),
    )
    return model, tokenizer


def eval_sampling(settings: DictConfig) -> tuple[SamplingSettings, int]:
    """(decoding settings, samples per item) of an `evaluation` block, checked by its one
    validation (evaluation_problems, which preflight reports too); call it before any training
    so a bad evaluation setting fails before hours of work."""
    values = OmegaConf.to_container(settings, resolve=True)
    raise_errors(evaluation_problems(values), f"{EVALUATION_KEY}.")
    return instantiate(settings.sampling), int(settings.num_samples)


def eval_choice(settings: DictConfig) -> ChoiceSettings | None:
    """The forced-choice settings (evaluation.choice) when evaluation.mode=choice_logprob, else
    None; the block is checked by `eval_sampling` (evaluation_problems)."""
    values = OmegaConf.to_container(settings, resolve=True)
    if evaluation_mode(values) != CHOICE_MODE:
        return None
    return ChoiceSettings.from_values(values.get("choice") or {})


def check_mode(settings: DictConfig, output_format: OutputFormat) -> None:
    """evaluation.mode must suit the output format (forced choice needs answer options): raised
    before any model loads, and by the entry points before any training."""
    mode = evaluation_mode(OmegaConf.to_container(settings, resolve=True))
    problem = mode_problem(mode, output_format)
    if problem:
        raise ValueError(problem)


def check_open_ended(output_format: OutputFormat, records: Sequence[QARecord], num_samples: int):
    """Open-ended formats: every record needs a reference, and answers cannot be voted on
    (there is no label); raised before any model loads."""
    if not output_format.open_ended:
        return
    if num_samples > 1:
        raise ValueError(
            f"evaluation.num_samples={num_samples} with format={output_format.name}: sampled "
            "evaluation votes over answer labels and open-ended answers have none; set "
            "evaluation.num_samples=1"
        )
    for record in records:
        reference_text(record)  # MissingReferenceError names the record and the fix


def run_eval(ctx: RunContext, chain: Sequence[StagePoint]) -> StageOutcome:
    """Predictions for each point on the same items (greedy, or k samples reduced to their
    majority vote), saved per item; metrics with 95% intervals, paired comparisons of
    consecutive points, eval/report.md and a bar chart, also sent to the loggers.

    Open-ended formats (free_text) get text metrics against each record's reference
    (`open_ended_metrics`) instead of accuracy, and no paired tests yet.

    evaluation.mode=choice_logprob scores every option instead of generating
    (`predict_choices`): the same files, with accuracy_norm beside accuracy and the paired
    tests on the raw answer.

    With evaluation.benchmarks (ctx.benchmarks), each point is loaded once and scored on every
    benchmark's eval pool: each benchmark gets the single-dataset outputs in eval/<benchmark>/,
    and eval/ a side-by-side report (`write_benchmark_outputs`)."""
    settings = ctx.cfg.evaluation
    _, num_samples = eval_sampling(settings)
    choice = eval_choice(settings)
    output_format = ctx.specs.output_format
    check_mode(settings, output_format)
    text_settings: TextMetricSettings = instantiate(settings.text_metrics)
    targets = eval_targets(ctx, settings.limit)
    if ctx.benchmarks is not None:  # first: its errors name evaluation.benchmarks
        check_benchmark_records(output_format, targets)
    for records in targets.values():
        check_open_ended(output_format, records, num_samples)
    out_dir = ctx.output_dir / ctx.stage_name(POOL)
    points = points_to_evaluate(chain, settings.include_base, settings.get("points"))
    predictions: dict[str | None, dict[str, list[Prediction]]] = {t: {} for t in targets}
    for point in points:
        model, tokenizer = load_for_eval(ctx, point)
        for target, records in targets.items():
            mine = predict_point(ctx, point, model, tokenizer, records)
            merged = merge_shards(distributed.all_gather_objects(mine), records)
            predictions[target][point.name] = merged
            if distributed.is_rank_zero():
                where = out_dir / target if target else out_dir
                write_predictions(where / point.name / "predictions.jsonl", merged)
    scored = {
        target: score_points(ctx, predictions[target], records, num_samples, text_settings)
        for target, records in targets.items()
    }
    method = choice_method(choice) if choice is not None else None
    notes = checkpoint_notes(points)
    if ctx.benchmarks is None:
        results, pairs = scored[None]
        with distributed.rank_zero_writes() as writer:
            if writer:
                write_outputs(out_dir, results, pairs, notes, method)
        metrics = eval_metrics(results, points[-1].name)
        tables = {"eval/report": results}
    else:
        benchmarks = {
            name: BenchmarkResult(ctx.benchmarks[name].summary.title, *scored[name])
            for name in targets
        }
        with distributed.rank_zero_writes() as writer:
            if writer:
                for name, benchmark in benchmarks.items():
                    write_outputs(out_dir / name, benchmark.results, benchmark.pairs, notes, method)
                write_benchmark_outputs(out_dir, benchmarks, notes, method)
        metrics = benchmark_metrics(benchmarks, points[-1].name)
        tables = {f"eval/{name}/report": b.results for name, b in benchmarks.items()}
    if distributed.is_rank_zero():
        _log(ctx, metrics, tables, out_dir / "comparison.png")
    return StageOutcome(None, metrics)


def eval_targets(ctx: RunContext, limit: int | None) -> dict[str | None, list[QARecord]]:
    """What the stage scores: {None: the run's eval pool} (its first `limit` items), or with
    evaluation.benchmarks {benchmark: its eval pool's first `limit` items}, in config order."""
    if ctx.benchmarks is None:
        return {None: list(ctx.pools[POOL])[:limit]}
    return dict(benchmark_records(ctx.benchmarks, limit))


def predict_point(
    ctx: RunContext, point: StagePoint, model, tokenizer, records: Sequence[QARecord]
) -> list[Prediction]:
    """This process's share of `point`'s predictions on `records`: forced choice
    (evaluation.mode=choice_logprob) or generation (greedy, or k samples)."""
    settings = ctx.cfg.evaluation
    sampling, num_samples = eval_sampling(settings)
    choice = eval_choice(settings)
    shard = (distributed.rank(), distributed.world_size())
    if choice is not None:
        return predict_choices(
            model,
            tokenizer,
            records,
            ctx.specs.output_format,
            point.model_spec.chat_template_kwargs,
            choice,
            batch_size=settings.batch_size,
            progress=distributed.is_rank_zero(),
            shard=shard,
        )
    return predict(
        model,
        tokenizer,
        records,
        ctx.specs.output_format,
        point.model_spec.chat_template_kwargs,
        sampling,
        batch_size=settings.batch_size,
        progress=distributed.is_rank_zero(),
        num_samples=num_samples,
        seed=settings.seed,
        shard=shard,
    )


def score_points(
    ctx: RunContext,
    predictions: dict[str, list[Prediction]],
    records: Sequence[QARecord],
    num_samples: int,
    text_settings: TextMetricSettings,
) -> tuple[dict, dict]:
    """(metrics per point, paired comparisons) of every point's predictions on `records`.

    One answer per item for accuracy and the paired tests: the majority vote when sampled;
    the output-describing rates then average all k samples (medrl.evaluation.sampling).
    Open-ended answers get `text_settings`' metrics and no paired tests."""
    if ctx.specs.output_format.open_ended:
        results = {
            name: open_ended_metrics(preds, text_settings, seed=ctx.seed)
            | judged_metrics(ctx, preds, records, text_settings)
            for name, preds in predictions.items()
        }
        return results, {}
    forced = eval_choice(ctx.cfg.evaluation) is not None
    return closed_metrics(predictions, records[0].labels, num_samples, ctx.seed, forced=forced)


def eval_metrics(results: dict, product: str, prefix: str = "eval") -> dict[str, float]:
    """`prefix`/<model>/<metric> for every model, and `prefix`/<metric> for the last point
    (`product`): the run's product, whose metrics sweeps and optimized_metric read."""
    metrics = {
        f"{prefix}/{name}/{key}": value
        for name, result in results.items()
        for key, value in flat_metrics(result).items()
    }
    metrics.update({f"{prefix}/{k}": v for k, v in flat_metrics(results[product]).items()})
    return metrics


def benchmark_metrics(benchmarks: dict[str, BenchmarkResult], product: str) -> dict[str, float]:
    """eval/<benchmark>/<model>/<metric> and eval/<benchmark>/<metric> (the product's) for
    every benchmark; the first benchmark (the headline) also gives the plain keys of a
    single-dataset evaluation (eval/<model>/<metric>, eval/<metric>), so optimized_metric and
    sweep aggregation read it unchanged."""
    metrics: dict[str, float] = {}
    for name, benchmark in benchmarks.items():
        metrics |= eval_metrics(benchmark.results, product, prefix=f"eval/{name}")
    headline = next(iter(benchmarks.values()))
    return metrics | eval_metrics(headline.results, product)


def judged_metrics(
    ctx: RunContext,
    predictions: Sequence[Prediction],
    records: Sequence[QARecord],
    settings: TextMetricSettings,
) -> dict:
    """The judge's scores of open-ended answers when the run has a judge (judge=local |
    hosted) and evaluation.text_metrics.judge_rubrics names rubrics; else nothing."""
    node = ctx.cfg.get("judge")
    if node is None or not settings.judge_rubrics:
        return {}
    by_id = {record.id: record for record in records}
    return judge_metrics(
        predictions, by_id, instantiate(node), settings.judge_rubrics, seed=ctx.seed
    )


def closed_metrics(
    predictions: dict[str, list[Prediction]],
    labels: Sequence[str],
    num_samples: int,
    seed: int,
    forced: bool = False,
) -> tuple[dict, dict]:
    """(metrics per point, paired comparisons of consecutive points) of labelled answers;
    forced: forced-choice predictions (`choice_metrics`: accuracy_norm added, the
    generation-only rates left out; the paired tests compare the raw answers)."""
    answers = {name: majority_vote(preds) for name, preds in predictions.items()}
    metrics_of = choice_metrics if forced else compute_metrics
    results = {
        name: metrics_of(answers[name], labels=labels, seed=seed)
        | (
            per_sample_rates(preds, seed=seed) | sampling_metrics(preds, seed=seed)
            if num_samples > 1
            else {}
        )
        for name, preds in predictions.items()
    }
    pairs = {
        f"{a} -> {b}": paired_comparison(answers[a], answers[b], seed=seed)
        for a, b in consecutive_pairs(list(predictions))
    }
    return results, pairs


def consecutive_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Each point against the one before it, and the first against the last when they differ."""
    pairs = list(itertools.pairwise(names))
    if len(names) > 2:
        pairs.append((names[0], names[-1]))
    return pairs


def checkpoint_notes(points: Sequence[StagePoint]) -> dict[str, str]:
    """Point name -> which training step its weights are and why, for the points whose stage
    checkpoint records a selection (validation during training); the report names them."""
    notes = {}
    for point in points:
        if point.checkpoint is None:
            continue
        selection = Manifest.read(point.checkpoint).selection
        if selection:
            notes[point.name] = selection_note(selection)
    return notes


def selection_note(selection: dict) -> str:
    """ "step 8 of 12 (select=best: the highest val/accuracy (0.3400) of 5 validations)"."""
    return (
        f"step {selection['step']} of {selection['last_step']} "
        f"(select={selection['select']}: {selection['reason']})"
    )


def choice_method(choice: ChoiceSettings) -> str:
    """The report's sentence naming the settings that define forced-choice scores."""
    return (
        f"Scored: evaluation.choice.continuation={choice.continuation}, "
        f"delimiter={json.dumps(choice.delimiter)}, length_unit={choice.length_unit}; "
        "per-option log-likelihoods are in each model's predictions.jsonl (option_logprobs)."
    )


def write_outputs(
    out_dir: Path,
    results: dict,
    pairs: dict,
    checkpoints: dict[str, str] | None = None,
    method: str | None = None,
) -> None:
    """summary.json (flat metrics per model), report.md (with `method`, how answers were
    obtained, when given) and comparison.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = {name: flat_metrics(result) for name, result in results.items()}
    (out_dir / "summary.json").write_text(json.dumps(flat, indent=2))
    write_markdown_report(out_dir / "report.md", results, pairs or None, checkpoints, method)
    bar_chart(results, out_dir / "comparison.png", chart_metrics(results))


def write_benchmark_outputs(
    out_dir: Path,
    benchmarks: dict[str, BenchmarkResult],
    checkpoints: dict[str, str] | None = None,
    method: str | None = None,
) -> None:
    """A multi-benchmark evaluation's eval/ files: summary.json ({"headline": the first
    benchmark, "benchmarks": {benchmark: {model: flat metrics}}}), report.md (side by side,
    then one section per benchmark) and comparison.png (every benchmark's headline metric)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "headline": next(iter(benchmarks)),
        "benchmarks": {
            name: {model: flat_metrics(result) for model, result in b.results.items()}
            for name, b in benchmarks.items()
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    write_benchmark_report(out_dir / "report.md", benchmarks, checkpoints, method)
    benchmark_chart(benchmarks, out_dir / "comparison.png")


def _log(ctx: RunContext, metrics: dict[str, float], tables: dict[str, dict], chart: Path) -> None:
    """Scalars to every logger; to loggers that take media (W&B), also the comparison chart
    and the metrics tables (key -> results: one row per model, each metric with its
    interval)."""
    for logger in ctx.loggers(ctx.stage_name(POOL)):
        logger.log_metrics(metrics)
        if hasattr(logger, "log_image"):
            logger.log_image(key="eval/comparison", images=[str(chart)])
        if hasattr(logger, "log_table"):
            for key, results in tables.items():
                columns, rows = metrics_rows(results)
                logger.log_table(key=key, columns=columns, data=rows)
        logger.finalize("success")


def metrics_rows(results: dict) -> tuple[list[str], list[list]]:
    """(columns, rows) of a table with one row per model: its name, then `flat_metrics`."""
    flat = {name: flat_metrics(result) for name, result in results.items()}
    keys = list(dict.fromkeys(key for values in flat.values() for key in values))
    rows = [[name, *(values.get(key) for key in keys)] for name, values in flat.items()]
    return ["model", *keys], rows
