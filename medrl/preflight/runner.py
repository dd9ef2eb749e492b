"""Run every preflight check that applies to the requested stages, collect the results, write
preflight.json, and raise one PreflightError listing every failure.

Two entry points because a config can be too broken to instantiate: `preflight_config` checks
the config's own values before `build_specs` (an unknown reward name would otherwise stop the
run there, alone), and `run_preflight` repeats them with the instantiated specs and the loaded
pools (no weights) to check data, rewards and prompt lengths as well.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medrl.components import RunSpecs
from medrl.data.records import QARecord
from medrl.distributed import is_rank_zero
from medrl.evaluation.choice import CHOICE_MODE, ChoiceSettings
from medrl.evaluation.settings import evaluation_mode, mode_problem
from medrl.evaluation.validation import ValidationSettings, metric_problem
from medrl.models import ModelSpec
from medrl.preflight.benchmarks import (
    TrainedOn,
    benchmark_context_checks,
    disjoint_checks,
    lineage_training,
)
from medrl.preflight.context import (
    Renderer,
    check_choice_fits,
    check_generation_fits,
    check_sft_lengths,
    sample_records,
)
from medrl.preflight.judge import judge_checks
from medrl.preflight.model import probe_model
from medrl.preflight.pools import (
    EVAL_POOL,
    GRPO_POOL,
    SFT_POOL,
    check_labels,
    check_references,
    pool_checks,
    pools_in_use,
    validation_pool_checks,
)
from medrl.preflight.report import (
    CheckResult,
    PreflightReport,
    failed,
    log_report,
    passed,
    skipped,
    write_report,
)
from medrl.preflight.rewards import check_gold_scores_best, reward_config_checks
from medrl.preflight.strategy import strategy_checks
from medrl.preflight.values import (
    evaluation_checks,
    grpo_checks,
    select,
    sft_checks,
    training_checks,
    values_at,
)
from medrl.stages.start import base_point
from medrl.utils.config import defaults_from_config
from medrl.utils.settings import SettingsBlock, SettingsError, bool_rule, count_rule, is_count

log = logging.getLogger(__name__)
# Only GRPO reads the reward set (SFT learns from targets, evaluation from the parser).
REWARD_STAGES = ("grpo",)
# Stage -> (its pool, the key of its generation length); SFT does not generate.
GENERATING_STAGES = {
    "grpo": (GRPO_POOL, "grpo.module.sampling.max_new_tokens"),
    "eval": (EVAL_POOL, "evaluation.sampling.max_new_tokens"),
}

Pools = Mapping[str, Sequence[QARecord]]


@dataclass(frozen=True)
@defaults_from_config("preflight/default")
class PreflightSettings(SettingsBlock):
    """The `preflight` config group (conf/preflight/default.yaml holds the defaults, read by
    medrl.train and medrl.eval); a config without it gets those defaults."""

    BLOCK = "preflight"
    RULES = (
        ("enabled", *bool_rule()),
        ("show_prompts", *count_rule(0, "prompts shown as the model will see them")),
    )

    enabled: bool
    show_prompts: int


def preflight_settings(cfg: DictConfig) -> PreflightSettings:
    node = cfg.get("preflight")
    return PreflightSettings.from_values(OmegaConf.to_container(node, resolve=True) if node else {})


def _stages(cfg: DictConfig, stages: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(cfg.stages) if stages is None else tuple(stages)


def config_checks(cfg: DictConfig, stages: Sequence[str]) -> list[CheckResult]:
    """Checks 1-4, for the stages that run. Rewards are checked when a stage reads them."""
    results: list[CheckResult] = []
    if "grpo" in stages:
        results += grpo_checks(cfg)
    if "sft" in stages:
        results += sft_checks(cfg)
    if "sft" in stages or "grpo" in stages:
        results += training_checks(cfg)
        results += strategy_checks(cfg)
    if "eval" in stages:
        results += evaluation_checks(cfg)
    if any(stage in REWARD_STAGES for stage in stages):
        judge_configured = select(cfg, "judge") is not None
        results += reward_config_checks(select(cfg, "reward.components"), judge_configured)
    return results


def preflight_config(cfg: DictConfig, stages: Sequence[str] | None = None) -> list[CheckResult]:
    """Checks 1-4 before anything is instantiated; raises PreflightError listing the failures."""
    if not preflight_settings(cfg).enabled:
        return []
    report = PreflightReport(config_checks(cfg, _stages(cfg, stages)))
    report.raise_if_failed()
    return report.results


def run_preflight(
    cfg: DictConfig,
    specs: RunSpecs,
    pools: Pools,
    tokenizer: Any | None = None,
    stages: Sequence[str] | None = None,
    name: str | None = None,
    benchmarks: Mapping[str, Sequence[QARecord]] | None = None,
    trained_on: Sequence[TrainedOn] = (),
    checkpoints: Sequence[Path] = (),
) -> PreflightReport:
    """Every check for `stages` (runner names; default cfg.stages), with no weights loaded.

    benchmarks: with evaluation.benchmarks, the items each benchmark scores; checked against
    `trained_on` (a training run's pools) and what the lineage of each of `checkpoints`
    (medrl.eval) trained on, and for prompt length (medrl.preflight.benchmarks).

    tokenizer: the model's tokenizer when the caller has one; else it is loaded when that is
    cheap (`preflight_tokenizer`) and the tokenizer checks are skipped, with a note, when not.
    Logs the prompts, writes preflight.json (preflight-<name>.json for a stage with its own
    definition, medrl.stages.plan) to cfg.paths.output_dir, and raises PreflightError
    when any check failed. With preflight.enabled=false it only logs that it was skipped.
    """
    settings = preflight_settings(cfg)
    if not settings.enabled:
        log.info("preflight checks skipped (preflight.enabled=false)")
        off = skipped("preflight", "preflight.enabled=false", "preflight.enabled")
        return PreflightReport([off])
    stages = _stages(cfg, stages)
    spec = start_model(cfg, specs.model)
    probe = probe_model(spec, tokenizer)
    renderer = Renderer(specs.output_format, probe.tokenizer, spec.chat_template_kwargs)
    results = config_checks(cfg, stages) + pool_checks(pools, stages)
    validation = values_at(cfg, "validation") or None
    eval_pool = getattr(pools, "eval_pool", EVAL_POOL)
    results += validation_pool_checks(pools, stages, validation, eval_pool)
    results += validation_metric_checks(validation, stages, specs.output_format.open_ended)
    results += evaluation_mode_checks(cfg, stages, specs.output_format)
    references = (
        check_references(pools, stages, specs.output_format.name)
        if specs.output_format.open_ended
        else check_labels(pools, stages, specs.output_format.name)
    )
    results += references + [skipped("model", note) for note in probe.notes]
    renderable = not any(r.status == "fail" for r in references)
    if not renderable:  # the checks below and the prompts shown render the gold answers
        results.append(skipped("reward_gold", "needs gold answers (see references / labels)"))
        results.append(skipped("context", "needs gold answers (see references / labels)"))
    else:
        results += gold_checks(specs, pools, stages, renderer)
        results += judge_preflight(cfg, specs, pools, stages)
        results += context_checks(cfg, stages, pools, renderer, probe.context)
    if benchmarks is not None and "eval" in stages:
        results += benchmark_checks(
            cfg, benchmarks, trained_on, checkpoints, renderer, probe.context
        )
    shown = sample_records(pools, pools_in_use(stages), settings.show_prompts) if renderable else []
    report = PreflightReport(results, [renderer.show(pool, record) for pool, record in shown])
    log_report(report)
    if is_rank_zero():  # every process checks; one writes
        write_report(report, Path(cfg.paths.output_dir), name)
    report.raise_if_failed()
    return report


def benchmark_checks(
    cfg: DictConfig,
    benchmarks: Mapping[str, Sequence[QARecord]],
    trained_on: Sequence[TrainedOn],
    checkpoints: Sequence[Path],
    renderer: Renderer,
    window: int | None,
) -> list[CheckResult]:
    """evaluation.benchmarks: every benchmark disjoint from what the evaluated models trained
    on (the run's training pools, the checkpoints' lineages), and its prompts within context."""
    lineage, notes = lineage_training(checkpoints)
    results = notes + disjoint_checks(benchmarks, [*trained_on, *lineage])
    return results + benchmark_context_checks(cfg, benchmarks, renderer, window, forced_choice(cfg))


def validation_metric_checks(
    validation: Mapping[str, Any] | None, stages: Sequence[str], open_ended: bool
) -> list[CheckResult]:
    """When a training stage validates: the metric that selection and patience follow is one
    the format computes (accuracy needs gold labels, token_f1 reference answers), so a run does
    not train to its first validation and stop there."""
    if validation is None or not ({"sft", "grpo"} & set(stages)):
        return []
    try:
        settings = ValidationSettings.from_values(validation)
    except SettingsError:
        return []  # the training block's check names the bad value
    if not settings.enabled:
        return []
    metric = settings.metric_for(open_ended)
    problem = metric_problem(metric, open_ended)
    if problem:
        return [failed("validation", problem, "validation.metric")]
    return [passed("validation", f"validation follows val/{metric}", "validation.metric")]


def evaluation_mode_checks(
    cfg: DictConfig, stages: Sequence[str], output_format: Any
) -> list[CheckResult]:
    """When the eval stage runs: evaluation.mode suits the output format (forced choice needs
    answer options; format=free_text has none)."""
    if "eval" not in stages:
        return []
    mode = evaluation_mode(values_at(cfg, "evaluation"))
    problem = mode_problem(mode, output_format)
    if problem:
        return [failed("evaluation", problem, "evaluation.mode")]
    return [
        passed(
            "evaluation",
            f"evaluation.mode={mode} suits format={output_format.name}",
            "evaluation.mode",
        )
    ]


def start_model(cfg: DictConfig, model: ModelSpec) -> ModelSpec:
    """The model the first stage starts from: the model group's, or the init_from checkpoint."""
    return base_point(model, cfg.get("init_from")).model_spec


def gold_checks(
    specs: RunSpecs, pools: Pools, stages: Sequence[str], renderer: Renderer
) -> list[CheckResult]:
    """Check 6 on the first record of the GRPO pool (else the eval pool, else the SFT pool)."""
    if not any(stage in REWARD_STAGES for stage in stages):
        return []
    order = [GRPO_POOL, EVAL_POOL, SFT_POOL]
    records = next((pools[name] for name in order if pools.get(name)), None)
    if not records:
        return [skipped("reward_gold", "no record in any pool to score", "reward")]
    tokenizer = renderer.tokenizer
    count = (
        None
        if tokenizer is None
        else (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    )
    other = records[1] if len(records) > 1 else None
    return [check_gold_scores_best(specs.rewards, specs.output_format, records[0], count, other)]


def judge_preflight(
    cfg: DictConfig, specs: RunSpecs, pools: Pools, stages: Sequence[str]
) -> list[CheckResult]:
    """The judge check (preflight/judge.py) on the first records of the GRPO pool (else the
    eval pool), when a stage uses the rewards."""
    if not any(stage in REWARD_STAGES for stage in stages):
        return []
    records = next((pools[name] for name in (GRPO_POOL, EVAL_POOL) if pools.get(name)), [])
    mode = select(cfg, "judge.preflight") or "fail"
    return judge_checks(specs.rewards, specs.output_format, list(records), mode)


def context_checks(
    cfg: DictConfig,
    stages: Sequence[str],
    pools: Pools,
    renderer: Renderer,
    window: int | None,
) -> list[CheckResult]:
    """Check 7: generation lengths against the context, and SFT example lengths."""
    if renderer.tokenizer is None:
        return [skipped("context", "no tokenizer: prompt lengths not checked")]
    results = []
    for stage, pool, key in generations(cfg, stages):
        records = generated_records(cfg, stage, pools.get(pool) or [])
        max_new_tokens = select(cfg, key)
        if not records or not is_count(max_new_tokens, 1):
            continue  # reported by the pool and value checks
        if window is None:
            results.append(skipped("context", f"{key}: the model's context is unknown", key))
            continue
        results.append(check_generation_fits(stage, key, max_new_tokens, records, renderer, window))
    results += choice_context_checks(cfg, stages, pools, renderer, window)
    max_seq_length = select(cfg, "sft.max_seq_length")
    if "sft" in stages and pools.get(SFT_POOL) and is_count(max_seq_length, 1):
        results += check_sft_lengths(pools[SFT_POOL], renderer, max_seq_length, window)
    return results


def forced_choice(cfg: DictConfig) -> bool:
    """True when the eval stage scores options instead of generating (evaluation.mode)."""
    return evaluation_mode(values_at(cfg, "evaluation")) == CHOICE_MODE


def choice_context_checks(
    cfg: DictConfig,
    stages: Sequence[str],
    pools: Pools,
    renderer: Renderer,
    window: int | None,
) -> list[CheckResult]:
    """Check 7 for forced choice: prompt + longest continuation within the context."""
    records = generated_records(cfg, "eval", pools.get(EVAL_POOL) or [])
    if "eval" not in stages or not forced_choice(cfg) or not records:
        return []
    key = "evaluation.choice.continuation"
    if window is None:
        return [skipped("context", f"{key}: the model's context is unknown", key)]
    if renderer.output_format.open_ended or any(record.open_ended for record in records):
        return []  # evaluation.mode's own check names the problem
    try:
        choice = ChoiceSettings.from_values(values_at(cfg, "evaluation.choice"))
    except SettingsError:
        return []  # the evaluation block's check names the bad value
    return [check_choice_fits(records, renderer, choice, window)]


def generations(cfg: DictConfig, stages: Sequence[str]) -> list[tuple[str, str, str]]:
    """(stage, pool, key of its generation length) of every generation the run makes: the
    generating stages (not the eval stage in forced choice, which generates nothing), and
    validation during the training stages when it is on."""
    found = [
        (stage, *GENERATING_STAGES[stage])
        for stage in stages
        if stage in GENERATING_STAGES and not (stage == "eval" and forced_choice(cfg))
    ]
    every, pool = select(cfg, "validation.every"), select(cfg, "validation.pool")
    training = any(stage in ("sft", "grpo") for stage in stages)
    if training and is_count(every, 1) and isinstance(pool, str):
        found.append(("validation", pool, "validation.max_new_tokens"))
    return found


def generated_records(
    cfg: DictConfig, stage: str, records: Sequence[QARecord]
) -> Sequence[QARecord]:
    """The records a generation reads: evaluation and validation only their first `limit`."""
    limits = {"eval": "evaluation.limit", "validation": "validation.limit"}
    limit = select(cfg, limits[stage]) if stage in limits else None
    return records[:limit] if is_count(limit, 1) else records
