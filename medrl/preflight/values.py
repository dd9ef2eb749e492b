"""Checks of the stage blocks' own values (grpo, sft, evaluation): config in, results out.

They read the composed config only, so they run before anything is instantiated and each
result names the key as the user writes it on the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medrl.algorithms.grpo_settings import MODULE_KEY, grpo_problems
from medrl.preflight.report import CheckResult, failed, passed, skipped, warned
from medrl.stages.evaluate import eval_sampling
from medrl.utils.settings import Problem, is_count, is_number, positive, show

Test = Callable[[Any], bool]


def select(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key`, None when absent (a missing key fails its rule, by name)."""
    return OmegaConf.select(cfg, key, default=None)


def count(minimum: int) -> Test:
    return lambda value: is_count(value, minimum)


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


# The grpo.module block is checked by grpo_problems (medrl.algorithms.grpo_settings), the one
# validation GRPOModule runs too; these are the keys outside it, and the sampling block's length
# (its other fields: check_sampling_block, which builds SamplingSettings as the stage does).
GRPO_RULES = (
    Rule(
        "grpo.module.sampling.max_new_tokens",
        count(1),
        "an integer >= 1 (tokens generated per completion)",
    ),
    Rule("grpo.max_steps", count(1), "an integer >= 1 (rollout steps)"),
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
    """Check 1: the GRPO block: grpo_problems over grpo.module (over the run's processes when
    their number is known), the sampling block, the stage's own keys."""
    results = apply(GRPO_RULES, cfg, "grpo")
    results.append(check_sampling_block(cfg, "grpo.module.sampling", "grpo"))
    module = select(cfg, MODULE_KEY)
    values = OmegaConf.to_container(module, resolve=True) if module is not None else {}
    world = processes(cfg)
    problems = grpo_problems(values, world)
    results += [problem_result("grpo", problem, f"{MODULE_KEY}.") for problem in problems]
    if not any(not problem.warning for problem in problems):
        over = f" over {world} process(es)" if world else ""
        results.append(passed("grpo", f"{MODULE_KEY}: every setting valid{over}", MODULE_KEY))
    return results


def problem_result(name: str, problem: Problem, prefix: str) -> CheckResult:
    """A settings problem as a check result, keyed and worded as the config spells it."""
    report = warned if problem.warning else failed
    return report(name, problem.message(prefix), f"{prefix}{problem.key}")


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
    """Checkpointing, numeric-fault and engine settings, shared by the SFT and GRPO stages."""
    return [*apply(TRAINING_RULES, cfg, "training"), check_engine_block(cfg)]


def check_engine_block(cfg: DictConfig) -> CheckResult:
    """Build the engine settings as the stages will (EngineSettings checks itself)."""
    key = "engine"
    node = select(cfg, key)
    if node is None:
        return failed("training", f"{key}: missing (conf/engine/)", key)
    try:
        instantiate(node)
    except InstantiationException as error:
        return failed("training", f"{key}: {error.__cause__ or error}", key)
    return passed("training", f"{key}: sampler {show(node.get('sampler'))}", key)


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
