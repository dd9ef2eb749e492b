"""Checks of the stage blocks' own values (grpo, sft, evaluation, and the checkpointing,
numeric-fault and engine blocks the training stages read): config in, results out.

Each block has one validation, written next to the code that reads it (grpo_settings,
sft_settings, evaluation.settings, the settings blocks' own rules); the stages raise on the
same problems. Here they run on the composed config before anything is instantiated, and each
result names the key as the user writes it on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medrl.algorithms.grpo_settings import STAGE_KEY as GRPO_KEY
from medrl.algorithms.grpo_settings import grpo_stage_problems
from medrl.algorithms.sft_settings import SFT_KEY, sft_problems
from medrl.evaluation.settings import EVALUATION_KEY, evaluation_problems
from medrl.preflight.report import CheckResult, failed, passed, warned
from medrl.stages.context import TRAINING_BLOCKS
from medrl.utils.settings import Problem, is_count


def select(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key`, None when absent (a missing key fails its rule, by name)."""
    return OmegaConf.select(cfg, key, default=None)


def values_at(cfg: DictConfig, key: str) -> dict[str, Any]:
    """The block at `key` as plain resolved values ({} when absent: every key then fails or
    takes its default, as the block's validation says)."""
    node = select(cfg, key)
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def processes(cfg: DictConfig) -> int | None:
    """trainer.devices x trainer.num_nodes when both are counts (None: decided at launch,
    e.g. devices=auto)."""
    devices, nodes = select(cfg, "trainer.devices"), select(cfg, "trainer.num_nodes") or 1
    if is_count(devices, 1) and is_count(nodes, 1):
        return devices * nodes
    return None


def problem_result(name: str, problem: Problem, prefix: str) -> CheckResult:
    """A settings problem as a check result, keyed and worded as the config spells it."""
    report = warned if problem.warning else failed
    return report(name, problem.message(prefix), f"{prefix}{problem.key}")


def block_results(
    name: str, key: str, problems: Sequence[Problem], valid: str = "every setting valid"
) -> list[CheckResult]:
    """The problems of the block at `key`, and a pass naming the block when none is an error."""
    results = [problem_result(name, problem, f"{key}.") for problem in problems]
    if not any(not problem.warning for problem in problems):
        results.append(passed(name, f"{key}: {valid}", key))
    return results


def over(world: int | None) -> str:
    return f"every setting valid over {world} process(es)" if world else "every setting valid"


def grpo_checks(cfg: DictConfig) -> list[CheckResult]:
    """Check 1: the grpo block (grpo_stage_problems: its module, over the run's processes when
    their number is known, and the stage's own keys)."""
    world = processes(cfg)
    problems = grpo_stage_problems(values_at(cfg, GRPO_KEY), world)
    return block_results("grpo", GRPO_KEY, problems, over(world))


def sft_checks(cfg: DictConfig) -> list[CheckResult]:
    """Check 2: the sft block (sft_problems), over the run's processes when known."""
    world = processes(cfg)
    return block_results("sft", SFT_KEY, sft_problems(values_at(cfg, SFT_KEY), world), over(world))


def evaluation_checks(cfg: DictConfig) -> list[CheckResult]:
    """Check 3: the evaluation block (evaluation_problems)."""
    problems = evaluation_problems(values_at(cfg, EVALUATION_KEY))
    return block_results("evaluation", EVALUATION_KEY, problems)


def training_checks(cfg: DictConfig) -> list[CheckResult]:
    """Checkpointing, numeric-fault and engine settings, shared by the SFT and GRPO stages."""
    results: list[CheckResult] = []
    for block in TRAINING_BLOCKS:
        if select(cfg, block.BLOCK) is None:
            results.append(failed("training", f"{block.BLOCK}: missing", block.BLOCK))
            continue
        results += block_results("training", block.BLOCK, block.check(values_at(cfg, block.BLOCK)))
    return results
