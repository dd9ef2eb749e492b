"""GRPO's settings and their one validation, shared by the module and preflight.

Each settings block is a frozen dataclass whose `check(values)` lists what is wrong with raw
values (a config node, before anything is built) and which validates itself when built.
`grpo_problems(values, world_size)` checks the whole `grpo.module` block: every block, the
module's own numbers and the rules between them, and (given the number of processes) the rules
that depend on it. GRPOModule raises on its errors when built and again in `setup` with the
world size; preflight (medrl/preflight/values.py) reports the same problems, keyed as the
config spells them, before anything loads. The valid names come from medrl.algorithms.core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
from medrl.algorithms.optim import OPTIMIZER_RULES
from medrl.rollout.settings import SamplingSettings
from medrl.utils.config import config_values, defaults_from_config
from medrl.utils.settings import (
    Problem,
    Rule,
    SettingsBlock,
    apply_rules,
    bool_rule,
    choice_rule,
    count_rule,
    is_bool,
    is_count,
    is_number,
    lower_clip,
    non_negative,
    positive,
    sub_block,
)

# The config keys of the grpo stage's block and of its module: problems are keyed below them.
STAGE_KEY = "grpo"
MODULE_KEY = "grpo.module"
# GRPOModule's defaults and its blocks': the values conf/grpo/standard.yaml writes, their one
# definition (grpo=standard is the default option; the variants change some of them).
MODULE_DEFAULTS = config_values("grpo/standard", "module")


@dataclass(frozen=True)
@defaults_from_config("grpo/standard", "module.advantage")
class AdvantageSettings(SettingsBlock):
    """How rewards become advantages (medrl.algorithms.core).

    estimator: group_mean (GRPO) | rloo (leave-one-out baseline); std_scope: group | batch |
    none; std_estimator: population | unbiased; eps >= 0 (added to the std). aggregation:
    sum_then_normalize (the weighted reward total is normalized: core.group_advantages) |
    normalize_then_sum (GDPO: each reward component is normalized within its group, then
    weighted and summed: core.decoupled_advantages). batch_renormalize: divide the result by
    its std over the whole batch (GDPO's last step, core.batch_renormalize).
    """

    BLOCK, PARENT = "advantage", MODULE_KEY
    RULES = (
        ("std_scope", *choice_rule(STD_SCOPES)),
        ("std_estimator", *choice_rule(STD_ESTIMATORS)),
        ("estimator", *choice_rule(ADVANTAGE_ESTIMATORS)),
        ("aggregation", *choice_rule(REWARD_AGGREGATIONS)),
        ("eps", non_negative, "must be a number >= 0 (added to the std; 0 = the paper's formula)"),
        ("batch_renormalize", is_bool, "must be true or false"),
    )

    std_scope: str
    std_estimator: str
    eps: float
    estimator: str
    aggregation: str
    batch_renormalize: bool


@dataclass(frozen=True)
@defaults_from_config("grpo/standard", "module.clip")
class ClipSettings(SettingsBlock):
    """PPO clip range [1 - eps_low, 1 + eps_high] (clip-higher when eps_high > eps_low);
    dual_clip c > 1 bounds the loss of tokens with negative advantage (null = off)."""

    BLOCK, PARENT = "clip", MODULE_KEY
    RULES = (
        ("eps_low", lower_clip, "must be in (0, 1]: the ratio is clipped below at 1 - eps_low"),
        ("eps_high", positive, "must be > 0: the ratio is clipped above at 1 + eps_high"),
        ("dual_clip", lambda v: v is None or (is_number(v) and v > 1), "must be null or > 1"),
    )

    eps_low: float
    eps_high: float
    dual_clip: float | None


@dataclass(frozen=True)
@defaults_from_config("grpo/standard", "module.sequence_clip")
class SequenceClipSettings(SettingsBlock):
    """GSPO's clip range for the sequence-level ratio (importance_sampling=sequence):
    [1 - eps_low, 1 + eps_high]. The paper's values (3e-4, 4e-4) are about 1000x smaller than
    the token-level ones, because a sequence ratio is a geometric mean of token ratios."""

    BLOCK, PARENT = "sequence_clip", MODULE_KEY
    RULES = (
        ("eps_low", lower_clip, "must be in (0, 1]: the sequence ratio is clipped below"),
        ("eps_high", positive, "must be > 0: the sequence ratio is clipped above"),
    )

    eps_low: float
    eps_high: float


@dataclass(frozen=True)
@defaults_from_config("grpo/standard", "module.entropy")
class EntropySettings(SettingsBlock):
    """Entropy controls. coef >= 0: an entropy bonus in the loss (0 = off). top_quantile:
    null = off, else rho in (0, 1]: only the completion tokens whose entropy is among the top
    rho of the whole rollout's tokens get policy gradient (Wang et al. 2025; the threshold is
    taken once per rollout over every token of all processes, from the policy that sampled
    it, so micro-batching does not change it)."""

    BLOCK, PARENT = "entropy", MODULE_KEY
    RULES = (
        ("coef", non_negative, "must be a number >= 0 (entropy bonus; 0 = off)"),
        (
            "top_quantile",
            lambda v: v is None or (is_number(v) and 0 < v <= 1),
            "must be null (off) or in (0, 1] (the fraction of the rollout's tokens, by "
            "entropy, that get policy gradient)",
        ),
    )

    coef: float
    top_quantile: float | None


@dataclass(frozen=True)
@defaults_from_config("grpo/standard", "module.kl")
class KLSettings(SettingsBlock):
    """KL(pi || pi_ref) in the loss with coefficient beta; beta = 0 loads no reference."""

    BLOCK, PARENT = "kl", MODULE_KEY
    RULES = (
        ("beta", non_negative, "must be a number >= 0 (0 = no KL term, no reference)"),
        ("estimator", *choice_rule(KL_ESTIMATORS)),
    )

    beta: float
    estimator: str


@dataclass(frozen=True)
@defaults_from_config("grpo/standard", "module.dynamic_sampling")
class DynamicSampling(SettingsBlock):
    """Drop groups whose rewards are all equal and draw more prompts, at most max_extra_draws
    extra batches of B prompts per step (DAPO's dynamic sampling)."""

    BLOCK, PARENT = "dynamic_sampling", MODULE_KEY
    RULES = (
        ("enabled", is_bool, "must be true or false"),
        ("max_extra_draws", *count_rule(0, "extra batches of prompts per step")),
    )

    enabled: bool
    max_extra_draws: int


BLOCKS: dict[str, type[SettingsBlock]] = {
    cls.BLOCK: cls
    for cls in (
        SamplingSettings,
        AdvantageSettings,
        ClipSettings,
        SequenceClipSettings,
        EntropySettings,
        KLSettings,
        DynamicSampling,
    )
}
MODULE_RULES: tuple[Rule, ...] = (
    ("prompts_per_step", *count_rule(1, "prompts per rollout step")),
    ("group_size", *count_rule(1, "completions per prompt")),
    ("mu", *count_rule(1, "update passes per rollout")),
    ("micro_batch_size", *count_rule(1, "completions per forward/backward pass")),
    *OPTIMIZER_RULES,
    ("grad_clip", non_negative, "must be a number >= 0 (the gradient's norm bound; 0 = off)"),
    ("loss_aggregation", *choice_rule(AGGREGATIONS)),
    ("importance_sampling", *choice_rule(IMPORTANCE_SAMPLING_LEVELS)),
    ("policy_loss", *choice_rule(POLICY_LOSSES)),
    ("mask_truncated", *bool_rule()),
    ("sample_table_every", *count_rule(0, "rollout steps between sample tables; 0 = never")),
)
# The keys of the grpo stage outside its module.
STAGE_RULES: tuple[Rule, ...] = (("max_steps", *count_rule(1, "rollout steps")),)


def grpo_problems(values: Mapping[str, Any], world_size: int | None = None) -> list[Problem]:
    """Every problem of the grpo.module settings `values` (GRPOModule's keyword arguments, built
    or raw), keyed below grpo.module; with `world_size`, also the rules that depend on the number
    of processes (None: not known yet, not checked). Errors first, then warnings."""
    problems = apply_rules(MODULE_RULES, values)
    blocks = {}
    for name, cls in BLOCKS.items():
        raw, not_a_block = sub_block(values, name)
        problems += not_a_block
        problems += [p.under(name) for p in cls.check(raw)]
        blocks[name] = {**cls.defaults(), **raw}  # a block left out takes its defaults
    problems += _between_settings(values, blocks)
    if world_size is not None:
        problems += _over_processes(values, blocks, world_size)
    return sorted(problems, key=lambda p: p.warning)


def _between_settings(values: Mapping[str, Any], blocks: dict[str, dict]) -> list[Problem]:
    problems = []
    size, scope = values.get("group_size"), blocks["advantage"].get("std_scope", "group")
    if is_count(size, 1) and size < 2:
        if scope != "none":
            problems.append(
                Problem(
                    "group_size",
                    size,
                    "GRPO divides advantages by the group's std, so group_size must be >= 2 "
                    "(or {prefix}advantage.std_scope=none)",
                )
            )
        else:
            problems.append(
                Problem(
                    "group_size",
                    size,
                    "with {prefix}advantage.std_scope=none a group of one is its own baseline, so "
                    "every advantage is 0 and only the KL term trains",
                    warning=True,
                )
            )
    dual = blocks["clip"].get("dual_clip")
    if dual is not None and values.get("policy_loss") == "cispo":
        problems.append(
            Problem(
                "clip.dual_clip",
                dual,
                "applies to {prefix}policy_loss=clip only (CISPO bounds its weight with "
                "{prefix}clip.eps_low / eps_high); set it to null",
            )
        )
    prompts, micro = values.get("prompts_per_step"), values.get("micro_batch_size")
    if all(is_count(v, 1) for v in (prompts, size, micro)):
        total = prompts * size
        if total % micro and micro < total:
            divisor = max(d for d in range(1, micro + 1) if total % d == 0)
            problems.append(
                Problem(
                    "micro_batch_size",
                    micro,
                    f"does not divide {{prefix}}prompts_per_step * {{prefix}}group_size = "
                    f"{prompts} * {size} = {total}: each rollout step's {total} completions are "
                    f"split into micro-batches of {micro} and a smaller last one; a divisor of "
                    f"{total} (e.g. {divisor}) keeps every pass the same size",
                    warning=True,
                )
            )
    return problems


def _over_processes(
    values: Mapping[str, Any], blocks: dict[str, dict], world: int
) -> list[Problem]:
    problems = []
    prompts = values.get("prompts_per_step")
    if is_count(prompts, 1) and prompts % world:
        problems.append(
            Problem(
                "prompts_per_step",
                prompts,
                f"is the global batch and must be a multiple of the {world} processes "
                "(trainer.devices x trainer.num_nodes): each rank samples "
                f"{{prefix}}prompts_per_step / {world} prompts; e.g. "
                f"{max(world, prompts - prompts % world)}",
            )
        )
    if world > 1 and blocks["dynamic_sampling"].get("enabled"):
        problems.append(
            Problem(
                "dynamic_sampling.enabled",
                True,
                "runs in a single process only (the ranks would keep different numbers of "
                "groups); disable it, or use trainer.devices=1",
            )
        )
    return problems


def grpo_stage_problems(values: Mapping[str, Any], world_size: int | None = None) -> list[Problem]:
    """Every problem of the whole `grpo` block `values` (raw config values), keyed below
    `grpo`: the stage's own keys and its module's (grpo_problems, below `module`)."""
    module, not_a_block = sub_block(values, "module")
    problems = not_a_block + apply_rules(STAGE_RULES, values)
    if not not_a_block:
        problems += [p.under("module") for p in grpo_problems(module, world_size)]
    return sorted(problems, key=lambda p: p.warning)
