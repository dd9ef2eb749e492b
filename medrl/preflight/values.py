"""Checks of the stage blocks' own values (grpo, sft, evaluation): config in, results out.

They read the composed config only, so they run before anything is instantiated and each
result names the key as the user writes it on the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medrl.algorithms.core import (
    ADVANTAGE_ESTIMATORS,
    AGGREGATIONS,
    IMPORTANCE_SAMPLING_LEVELS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    REWARD_AGGREGATIONS,
    STD_ESTIMATORS,
    STD_SCOPES,
)
from medrl.preflight.report import CheckResult, failed, passed, skipped, warned
from medrl.rollout.settings import SAMPLERS
from medrl.stages.evaluate import eval_sampling

Test = Callable[[Any], bool]


def select(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key`, None when absent (a missing key fails its rule, by name)."""
    return OmegaConf.select(cfg, key, default=None)


def show(value: Any) -> str:
    """A value as a Hydra override would spell it (null, 5e-06, xml)."""
    return "null" if value is None else str(value)


def is_number(value: Any) -> bool:
    # bool is an int subclass, but `lr: true` is a yaml slip, not 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def count(minimum: int) -> Test:
    return lambda value: is_count(value, minimum)


def positive(value: Any) -> bool:
    return is_number(value) and value > 0


def non_negative(value: Any) -> bool:
    return is_number(value) and value >= 0


def lower_clip(value: Any) -> bool:
    return is_number(value) and 0 < value <= 1


@dataclass(frozen=True)
class Rule:
    """A key, the test its value must pass, and the requirement in words for the message."""

    key: str
    test: Test
    requirement: str

    def check(self, cfg: DictConfig, name: str) -> CheckResult:
        value = select(cfg, self.key)
        if self.test(value):
            return passed(name, f"{self.key}={show(value)}", self.key)
        return failed(name, f"{self.key}={show(value)}: must be {self.requirement}", self.key)


GRPO_RULES = (
    Rule("grpo.module.prompts_per_step", count(1), "an integer >= 1 (prompts per rollout step)"),
    Rule("grpo.module.mu", count(1), "an integer >= 1 (update passes per rollout)"),
    Rule(
        "grpo.module.micro_batch_size",
        count(1),
        "an integer >= 1 (completions per forward/backward pass)",
    ),
    Rule(
        "grpo.module.sampling.max_new_tokens",
        count(1),
        "an integer >= 1 (tokens generated per completion)",
    ),
    Rule("grpo.module.kl.beta", non_negative, "a number >= 0 (0 = no KL term, no reference)"),
    Rule(
        "grpo.module.clip.eps_low",
        lower_clip,
        "in (0, 1]: the ratio is clipped below at 1 - eps_low >= 0 (1 = no lower bound)",
    ),
    Rule("grpo.module.clip.eps_high", positive, "> 0: the ratio is clipped above at 1 + eps_high"),
    Rule(
        "grpo.module.sequence_clip.eps_low",
        lower_clip,
        "in (0, 1]: the sequence ratio is clipped below at 1 - eps_low >= 0",
    ),
    Rule(
        "grpo.module.sequence_clip.eps_high",
        positive,
        "> 0: the sequence ratio is clipped above at 1 + eps_high",
    ),
    Rule(
        "grpo.module.advantage.eps",
        non_negative,
        "a number >= 0 (added to the std; 0 = the GRPO paper's formula)",
    ),
    Rule(
        "grpo.module.advantage.batch_renormalize",
        lambda value: isinstance(value, bool),
        "true or false",
    ),
    Rule("grpo.module.entropy.coef", non_negative, "a number >= 0 (entropy bonus; 0 = off)"),
    Rule(
        "grpo.module.entropy.top_quantile",
        lambda value: value is None or (is_number(value) and 0 < value <= 1),
        "null (off) or in (0, 1] (the fraction of the rollout's tokens, by entropy, that get "
        "policy gradient)",
    ),
    Rule("grpo.module.lr", positive, "a number > 0"),
    Rule("grpo.max_steps", count(1), "an integer >= 1 (rollout steps)"),
)
GRPO_CHOICES = (
    ("grpo.module.advantage.std_scope", STD_SCOPES),
    ("grpo.module.advantage.std_estimator", STD_ESTIMATORS),
    ("grpo.module.advantage.estimator", ADVANTAGE_ESTIMATORS),
    ("grpo.module.advantage.aggregation", REWARD_AGGREGATIONS),
    ("grpo.module.importance_sampling", IMPORTANCE_SAMPLING_LEVELS),
    ("grpo.module.policy_loss", POLICY_LOSSES),
    ("grpo.module.kl.estimator", KL_ESTIMATORS),
    ("grpo.module.loss_aggregation", AGGREGATIONS),
    ("engine.sampler", SAMPLERS),
)
SFT_RULES = (
    Rule("sft.batch_size", count(1), "an integer >= 1"),
    Rule("sft.grad_accum", count(1), "an integer >= 1"),
    Rule("sft.max_seq_length", count(1), "an integer > 0 (tokens per example)"),
    Rule("sft.module.lr", positive, "a number > 0"),
    Rule(
        "sft.val_fraction",
        lambda value: is_number(value) and 0 <= value < 1,
        "in [0, 1) (the held-out fraction of the SFT pool)",
    ),
)
# Read by the SFT and GRPO stages (conf/train.yaml); checked only when one of them runs.
TRAINING_RULES = (
    Rule("checkpointing.every_n_steps", count(1), "an integer >= 1 (optimizer steps)"),
    Rule("checkpointing.keep_last", count(1), "an integer >= 1 (files kept per stage)"),
    Rule(
        "numeric_faults.max_consecutive",
        count(1),
        "an integer >= 1 (skipped updates in a row before the run stops)",
    ),
)
EVAL_RULES = (
    Rule("evaluation.batch_size", count(1), "an integer >= 1 (prompts per generate call)"),
    Rule(
        "evaluation.limit",
        lambda value: value is None or is_count(value, 1),
        "null (every item) or an integer >= 1",
    ),
    Rule(
        "evaluation.sampling.max_new_tokens",
        count(1),
        "an integer >= 1 (tokens generated per completion)",
    ),
)


def apply(rules: Sequence[Rule], cfg: DictConfig, name: str) -> list[CheckResult]:
    return [rule.check(cfg, name) for rule in rules]


def grpo_checks(cfg: DictConfig) -> list[CheckResult]:
    """Check 1: the GRPO block's numbers and named conventions."""
    results = apply(GRPO_RULES, cfg, "grpo")
    results += [check_choice(cfg, key, valid) for key, valid in GRPO_CHOICES]
    results.append(check_group_size(cfg))
    results.append(check_dual_clip_loss(cfg))
    results.append(check_micro_batches(cfg))
    results.append(check_sampling_block(cfg, "grpo.module.sampling", "grpo"))
    results.append(check_split_over_processes(cfg, "grpo.module.prompts_per_step", "grpo"))
    results.append(check_dynamic_sampling_processes(cfg))
    return results


def processes(cfg: DictConfig) -> int | None:
    """trainer.devices x trainer.num_nodes when both are counts (None: decided at launch,
    e.g. devices=auto)."""
    devices, nodes = select(cfg, "trainer.devices"), select(cfg, "trainer.num_nodes") or 1
    if is_count(devices, 1) and is_count(nodes, 1):
        return devices * nodes
    return None


def check_split_over_processes(cfg: DictConfig, key: str, name: str) -> CheckResult:
    """A global batch is split evenly over the processes (medrl.distributed), so it must be a
    multiple of their number."""
    value, world = select(cfg, key), processes(cfg)
    if world is None or not is_count(value, 1):
        return skipped(name, f"{key}: not checked against the number of processes", key)
    if value % world == 0:
        return passed(name, f"{key}={value}: {value // world} per process x {world}", key)
    return failed(
        name,
        f"{key}={value} is the global batch and must be a multiple of the {world} processes "
        f"(trainer.devices x trainer.num_nodes): e.g. {max(world, value - value % world)}",
        key,
    )


def check_dynamic_sampling_processes(cfg: DictConfig) -> CheckResult:
    key = "grpo.module.dynamic_sampling.enabled"
    world = processes(cfg)
    if not select(cfg, key) or world in (None, 1):
        return passed("grpo", f"{key}={show(select(cfg, key))}", key)
    return failed(
        "grpo",
        f"{key}=true runs in one process only (the ranks would keep different numbers of "
        "groups); disable it, or use trainer.devices=1",
        key,
    )


def check_choice(cfg: DictConfig, key: str, valid: Sequence[str]) -> CheckResult:
    """A named convention must be one the math implements (core.py's tuples), or the first
    rollout step fails after the weights have loaded."""
    value = select(cfg, key)
    if value in valid:
        return passed("grpo", f"{key}={show(value)}", key)
    return failed("grpo", f"{key}={show(value)}: must be one of {list(valid)}", key)


def check_group_size(cfg: DictConfig) -> CheckResult:
    """Group-relative advantages need a group: with a std in the denominator, at least two."""
    key = "grpo.module.group_size"
    size = select(cfg, key)
    scope = select(cfg, "grpo.module.advantage.std_scope")
    if not is_count(size, 1):
        return failed("grpo", f"{key}={show(size)}: must be an integer >= 1", key)
    if size < 2 and scope != "none":
        return failed(
            "grpo",
            f"{key}={size}: GRPO divides advantages by the group's std, so group_size must "
            "be >= 2 (or advantage.std_scope=none)",
            key,
        )
    if size < 2:
        return warned(
            "grpo",
            f"{key}={size} with advantage.std_scope=none: a group of one is its own baseline, "
            "so every advantage is 0 and only the KL term trains",
            key,
        )
    return passed("grpo", f"{key}={size} (advantage.std_scope={scope})", key)


def check_dual_clip_loss(cfg: DictConfig) -> CheckResult:
    """The dual clip bounds the clipped surrogate; CISPO's loss has no such term."""
    key = "grpo.module.clip.dual_clip"
    dual, loss = select(cfg, key), select(cfg, "grpo.module.policy_loss")
    if dual is None or loss != "cispo":
        return passed("grpo", f"{key}={show(dual)} (policy_loss={show(loss)})", key)
    return failed(
        "grpo",
        f"{key}={show(dual)} applies to grpo.module.policy_loss=clip only (CISPO bounds its "
        "weight with clip.eps_low / eps_high); set it to null",
        key,
    )


def check_micro_batches(cfg: DictConfig) -> CheckResult:
    """Each rollout step splits its B*G completions into micro-batches.

    The loss is normalized by the step's totals, so a remainder is not wrong (the GRPO module
    runs a smaller last pass): a warning, since the last pass then differs from the size chosen
    for the device. A micro-batch of B*G or more is one pass holding the whole step: fine.
    """
    key = "grpo.module.micro_batch_size"
    prompts = select(cfg, "grpo.module.prompts_per_step")
    size = select(cfg, "grpo.module.group_size")
    micro = select(cfg, key)
    if not all(is_count(value, 1) for value in (prompts, size, micro)):
        return skipped("grpo", f"{key}: not checked against B*G (a count is invalid)", key)
    total = prompts * size
    if total % micro == 0 or micro >= total:
        return passed("grpo", f"{key}={micro} fits B*G={total}", key)
    divisors = [d for d in range(1, total + 1) if total % d == 0 and d <= micro]
    return warned(
        "grpo",
        f"{key}={micro} does not divide grpo.module.prompts_per_step * grpo.module.group_size"
        f" = {prompts} * {size} = {total}: each rollout step's {total} completions are split "
        f"into micro-batches of {key} and a smaller last one; a divisor of {total} "
        f"(e.g. {max(divisors)}) keeps every pass the same size",
        key,
    )


def check_sampling_block(cfg: DictConfig, key: str, name: str) -> CheckResult:
    """Build the decoding settings as the stage will, so their own checks (temperature, top_p,
    min_p) fail now. A bad max_new_tokens is reported by its rule, not a second time here."""
    node = select(cfg, key)
    if node is None:
        return failed(name, f"{key}: missing", key)
    try:
        instantiate(with_valid_length(node))
    except InstantiationException as error:
        return failed(name, f"{key}: {error.__cause__ or error}", key)
    return passed(name, f"{key}: valid decoding settings", key)


def with_valid_length(node: DictConfig) -> DictConfig:
    """A copy whose max_new_tokens is valid, so the other fields still get checked."""
    copy = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    if not is_count(copy.get("max_new_tokens"), 1):
        copy.max_new_tokens = 1
    return copy


def training_checks(cfg: DictConfig) -> list[CheckResult]:
    """Checkpointing and numeric-fault settings, shared by the SFT and GRPO stages."""
    return apply(TRAINING_RULES, cfg, "training")


def sft_checks(cfg: DictConfig) -> list[CheckResult]:
    """Check 2: the SFT block's numbers, and that it trains at all."""
    return [
        *apply(SFT_RULES, cfg, "sft"),
        check_sft_schedule(cfg),
        check_split_over_processes(cfg, "sft.batch_size", "sft"),
    ]


def check_sft_schedule(cfg: DictConfig) -> CheckResult:
    """sft.max_steps > 0 trains by steps; otherwise sft.epochs must be >= 1."""
    epochs, max_steps = select(cfg, "sft.epochs"), select(cfg, "sft.max_steps")
    where = f"sft.epochs={show(epochs)}, sft.max_steps={show(max_steps)}"
    if not (isinstance(max_steps, int) and isinstance(epochs, int)):
        return failed("sft", f"{where}: both must be integers", "sft.epochs")
    if max_steps > 0 or epochs >= 1:
        return passed("sft", where, "sft.epochs")
    fix = "SFT would not train; set sft.epochs >= 1 or sft.max_steps > 0"
    return failed("sft", f"{where}: {fix}", "sft.epochs")


def evaluation_checks(cfg: DictConfig) -> list[CheckResult]:
    """Check 3: the evaluation block. num_samples (and its clash with greedy decoding) is
    eval_sampling's check, the one the stage itself runs, reused here."""
    results = apply(EVAL_RULES, cfg, "evaluation")
    settings = select(cfg, "evaluation")
    if settings is None:
        return results
    copy = OmegaConf.create(OmegaConf.to_container(settings, resolve=True))
    copy.sampling = with_valid_length(copy.sampling)
    try:
        eval_sampling(copy)
    except InstantiationException as error:
        key = "evaluation.sampling"
        results.append(failed("evaluation", f"{key}: {error.__cause__ or error}", key))
    except ValueError as error:  # eval_sampling's own errors are about num_samples
        results.append(failed("evaluation", str(error), "evaluation.num_samples"))
    else:
        key = "evaluation.num_samples"
        results.append(passed("evaluation", f"{key}={show(settings.num_samples)}", key))
    return results
