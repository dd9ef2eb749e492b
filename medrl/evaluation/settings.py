"""The `evaluation` block's settings and their one validation, shared by the eval stage and
preflight.

`evaluation_problems(values)` lists what is wrong with the block (conf/evaluation/), keyed
below `evaluation`: its mode, its counts, its decoding settings (medrl.rollout.SamplingSettings'
own rules, below `sampling`), its forced-choice settings (medrl.evaluation.choice.ChoiceSettings,
below `choice`) and the rules between them (k samples need sampled decoding; forced choice
scores each item once). The stage raises on them before any model loads; preflight reports the
same problems. `mode_problem` is the rule between the mode and the output format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrl.evaluation.choice import CHOICE_MODE, MODES, ChoiceSettings
from medrl.prompts import OutputFormat
from medrl.rollout.settings import SamplingSettings
from medrl.utils.config import config_values
from medrl.utils.settings import (
    Problem,
    Rule,
    apply_rules,
    bool_rule,
    choice_rule,
    count_rule,
    is_count,
    sub_block,
)

# The config key of the block: problems are keyed below it.
EVALUATION_KEY = "evaluation"

RULES: tuple[Rule, ...] = (
    ("mode", *choice_rule(MODES)),
    ("include_base", *bool_rule()),
    ("batch_size", *count_rule(1, "prompts per generate call")),
    (
        "limit",
        lambda v: v is None or is_count(v, 1),
        "must be null (every item) or an integer >= 1",
    ),
    ("num_samples", *count_rule(1, "completions per item; > 1 reports maj@k and pass@k")),
)


def evaluation_mode(values: Mapping[str, Any]) -> str:
    """The block's mode; a block without one gets conf/evaluation/default.yaml's."""
    return values.get("mode", config_values("evaluation/default")["mode"])


def evaluation_problems(values: Mapping[str, Any]) -> list[Problem]:
    """Every problem of the `evaluation` block `values` (raw config values)."""
    values = {**values, "mode": evaluation_mode(values)}
    sampling, problems = sub_block(values, "sampling")
    choice, choice_problems = sub_block(values, "choice")
    problems += choice_problems + apply_rules(RULES, values)
    problems += [p.under("sampling") for p in SamplingSettings.check(sampling)]
    problems += [p.under("choice") for p in ChoiceSettings.check(choice)]
    num_samples = values.get("num_samples")
    if values["mode"] == CHOICE_MODE and is_count(num_samples, 2):
        problems.append(
            Problem(
                "num_samples",
                num_samples,
                f"needs {{prefix}}num_samples=1 with {{prefix}}mode={CHOICE_MODE} (forced choice "
                "scores every option once: there is nothing to sample)",
            )
        )
        return problems
    greedy = {**SamplingSettings.defaults(), **sampling}.get("greedy")
    if is_count(num_samples, 2) and greedy is True:
        problems.append(
            Problem(
                "num_samples",
                num_samples,
                "needs {prefix}sampling.greedy=false (greedy decoding gives k identical "
                "completions)",
            )
        )
    return problems


def mode_problem(mode: str, output_format: OutputFormat) -> str | None:
    """Why evaluation.mode cannot score answers in `output_format`, or None: forced choice needs
    answer options, and open-ended formats (format=free_text) have none."""
    if mode == CHOICE_MODE and output_format.open_ended:
        return (
            f"evaluation.mode={CHOICE_MODE} scores answer options, and format="
            f"{output_format.name} is open-ended (no options); set evaluation.mode=generate or "
            "a closed format (format=letter, xml, json, tags)"
        )
    return None
