"""The `evaluation` block's settings and their one validation, shared by the eval stage and
preflight.

`evaluation_problems(values)` lists what is wrong with the block (conf/evaluation/), keyed
below `evaluation`: its counts, its decoding settings (medrl.rollout.SamplingSettings' own
rules, below `sampling`) and the rule between them (k samples need sampled decoding). The
stage raises on them before any model loads; preflight reports the same problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrl.rollout.settings import SamplingSettings
from medrl.utils.settings import (
    Problem,
    Rule,
    apply_rules,
    bool_rule,
    count_rule,
    is_count,
    sub_block,
)

# The config key of the block: problems are keyed below it.
EVALUATION_KEY = "evaluation"

RULES: tuple[Rule, ...] = (
    ("include_base", *bool_rule()),
    ("batch_size", *count_rule(1, "prompts per generate call")),
    (
        "limit",
        lambda v: v is None or is_count(v, 1),
        "must be null (every item) or an integer >= 1",
    ),
    ("num_samples", *count_rule(1, "completions per item; > 1 reports maj@k and pass@k")),
)


def evaluation_problems(values: Mapping[str, Any]) -> list[Problem]:
    """Every problem of the `evaluation` block `values` (raw config values)."""
    sampling, problems = sub_block(values, "sampling")
    problems += apply_rules(RULES, values)
    problems += [p.under("sampling") for p in SamplingSettings.check(sampling)]
    num_samples = values.get("num_samples")
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
