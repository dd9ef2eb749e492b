"""Reward checks: the reward yaml's components (check 4), and the reward set against a real row
rendered by the chosen output format (check 6).

The component checks reuse `build_reward_set` and the registry, one component at a time, so each
message names the exact key (reward.components.<name>.weight) and every bad component is
reported, not only the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medrl.data.records import QARecord
from medrl.preflight.report import CheckResult, failed, passed, skipped, warned
from medrl.prompts.base import OutputFormat
from medrl.rewards import RewardSample, RewardSet, build_reward_set, get_reward
from medrl.rewards.composite import reward_weight
from medrl.rewards.judge import JUDGE_REWARDS
from medrl.utils.config import CONFIG_DIR

KEY = "reward.components"
# What the reward functions document (medrl/rewards/functions.py: "In [0, 1]", "In {0, 0.5,
# 1}"). RewardSet has no notion of a maximum; a reward missing here makes the gold check fall
# back to "gold beats a wrong label" and say so.
DOCUMENTED_RANGES: dict[str, tuple[float, float]] = {
    name: (0.0, 1.0)
    for name in (
        "correctness",
        "format",
        "json_valid",
        "json_schema",
        "explanation_length",
        "reasoning_tags",
        "brevity",
        "token_efficiency",
        "token_f1",
        "rouge_l",
    )
}
TOLERANCE = 1e-9


def reward_config_checks(components: Any, judge_configured: bool = False) -> list[CheckResult]:
    """Check 4: names in the registry, finite weights, parameters the functions accept, and at
    least one positive weight; judge_* components need the judge group (`judge_configured`)."""
    if isinstance(components, DictConfig):
        components = OmegaConf.to_container(components, resolve=True)
    if not isinstance(components, Mapping) or not components:  # the builder's error lists names
        return [failed("rewards", f"{KEY}: {_build_error(components)}", KEY)]
    results = [
        check_judge_component(str(name), spec, judge_configured)
        if str(name) in JUDGE_REWARDS
        else check_component(str(name), spec)
        for name, spec in components.items()
    ]
    results.append(check_some_weight_positive(components))
    return results


def check_component(name: str, spec: Any) -> CheckResult:
    """One component, validated by the builder itself; the error is tagged with its key."""
    key = f"{KEY}.{name}"
    try:
        get_reward(name)
    except ValueError as error:  # lists the valid names
        return failed("rewards", f"{key}: {error}", key)
    if isinstance(spec, Mapping):
        weight = {k: v for k, v in spec.items() if k == "weight"}
        error = _build_error({name: weight})
        if error:
            return failed("rewards", f"{key}.weight={spec.get('weight')}: {error}", f"{key}.weight")
    error = _build_error({name: spec})
    if error:
        return failed("rewards", f"{key}: {error}", key)
    return passed("rewards", f"{key}: weight {spec['weight']}", key)


def check_judge_component(name: str, spec: Any, judge_configured: bool) -> CheckResult:
    """A judge_* component: the judge group is set, the weight is a finite number, and the only
    parameter is `rubric` (the endpoint itself is checked by preflight/judge.py)."""
    key = f"{KEY}.{name}"
    if not judge_configured:
        message = f"{key}: reward {name!r} needs a judge endpoint: add judge=local or judge=hosted"
        return failed("rewards", message, "judge")
    if not isinstance(spec, Mapping):
        return failed("rewards", f"{key}: expected a mapping like {{weight: 1.0}}", key)
    try:
        weight = reward_weight(name, spec)
    except ValueError as error:
        return failed("rewards", f"{key}.weight={spec.get('weight')}: {error}", f"{key}.weight")
    unknown = sorted(set(spec) - {"weight", "rubric"})
    if unknown:
        return failed(
            "rewards", f"{key}: unknown parameter(s) {unknown}; it accepts ['rubric']", key
        )
    return passed("rewards", f"{key}: weight {weight}", key)


def _build_error(components: Any) -> str | None:
    try:
        build_reward_set(components)
    except ValueError as error:
        return str(error)
    return None


def check_some_weight_positive(components: Mapping[str, Any]) -> CheckResult:
    """With no positive weight nothing is rewarded: all-zero weights give every completion the
    same total, so every GRPO advantage is 0."""
    weights = {
        str(name): spec.get("weight")
        for name, spec in components.items()
        if isinstance(spec, Mapping) and _finite(spec.get("weight"))
    }
    listed = ", ".join(f"{KEY}.{name}.weight={w}" for name, w in weights.items())
    if any(w > 0 for w in weights.values()):
        return passed("rewards", f"{KEY}: a positive weight among {listed}", KEY)
    return failed(
        "rewards",
        f"{KEY}: no weight is > 0 ({listed or 'no valid weight'}); at least one must be, or no "
        "completion is rewarded for anything and GRPO has no signal",
        KEY,
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def reward_max(rewards: RewardSet) -> float | None:
    """The largest total the set can give, from the documented ranges; None if one is unknown."""
    if any(c.name not in DOCUMENTED_RANGES for c in rewards.components):
        return None
    return math.fsum(
        max(c.weight * low, c.weight * high)
        for c in rewards.components
        for low, high in [DOCUMENTED_RANGES[c.name]]
    )


def check_gold_scores_best(
    rewards: RewardSet,
    output_format: OutputFormat,
    record: QARecord,
    count_tokens: Callable[[str], int] | None,
    other: QARecord | None = None,
) -> CheckResult:
    """Check 6: the SFT target of a real row (render_target) must reach the reward set's
    maximum, and the same answer with a wrong label must score strictly less. Open-ended
    formats have no label to get wrong: there the wrong answer is `other`'s reference text.

    A reward set made for another format (reward=json with format=xml) fails here: the model
    would be trained towards one format and rewarded for another. A set with a reward whose
    range is not documented here (one registered by research or test code) only gets a
    warning: preflight cannot know what that reward should give. Length rewards see the
    target's token count; without a tokenizer they are scored as if it were 1 token.
    """
    judged = rewards.judges
    rewards = rewards.without_judges()  # the judges have their own check (preflight/judge.py)
    if rewards is None:
        return skipped("reward_gold", "every reward is a judge (see the judge check)", "reward")
    wrong = wrong_answer(output_format, record, other)
    if wrong is None:
        return skipped("reward_gold", f"record {record.id}: no wrong answer to compare", "reward")
    wrong_name, wrong_record = wrong
    gold_text = output_format.render_target(record)
    wrong_text = output_format.render_target(wrong_record)

    def score(text: str):
        tokens = count_tokens(text) if count_tokens else 1
        return rewards.score(text, RewardSample(record, output_format, tokens))

    gold, wrong = score(gold_text), score(wrong_text)
    best = reward_max(rewards)
    problems = []
    if best is not None and gold.total < best - TOLERANCE:
        problems.append("the gold answer must reach the maximum")
    if not wrong.total < gold.total:
        wrong_kind = "another record's answer" if output_format.open_ended else "a wrong label"
        problems.append(f"{wrong_kind} must score less than the gold answer")
    where = f"reward ({', '.join(rewards.names)}) with format={output_format.name}"
    top = "unknown" if best is None else f"{best:g}"
    scores = (
        f"record {record.id}'s gold answer scores {gold.total:g}, {wrong_name} "
        f"{wrong.total:g}, maximum {top}"
    )
    if judged:
        where += f" (judges left out: {', '.join(c.name for c in judged)})"
    if not problems:
        return passed("reward_gold", f"{where}: {scores}", "reward")
    components = ", ".join(f"{name}={value:g}" for name, value in gold.components.items())
    message = (
        f"{where}: {scores}; {' and '.join(problems)} (gold components: {components}; gold "
        f"text: {gold_text!r}). {_advice(output_format)}"
    )
    undocumented = [n for n in rewards.names if n not in DOCUMENTED_RANGES]
    if undocumented:  # a reward preflight does not know (a custom or test reward): advise only
        note = f" Only a warning: preflight does not know the range of {undocumented}."
        return warned("reward_gold", message + note, "reward")
    return failed("reward_gold", message, "reward")


def wrong_answer(
    output_format: OutputFormat, record: QARecord, other: QARecord | None
) -> tuple[str, QARecord] | None:
    """(a description, the record whose SFT target is a wrong answer to `record`): the same
    record with another label, or for open-ended formats `other` (its reference answer).
    None when there is none (a single option; no other record)."""
    if output_format.open_ended:
        return None if other is None else (f"record {other.id}'s reference answer", other)
    wrong_labels = [label for label in record.labels if label != record.answer]
    if not wrong_labels:
        return None
    return f"with the wrong label {wrong_labels[0]}", replace(record, answer=wrong_labels[0])


def _advice(output_format: OutputFormat) -> str:
    if (CONFIG_DIR / "reward" / f"{output_format.name}.yaml").is_file():
        return f"Choose the reward group made for the format (reward={output_format.name})."
    return "Choose a reward group whose components match the format, or change format."
