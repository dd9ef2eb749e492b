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
from medrl.utils.config import config_values, group_options
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
# The dataset group whose options evaluation.benchmarks names (conf/dataset/<name>.yaml).
BENCHMARK_GROUP = "dataset"
BENCHMARKS_KEY = f"{EVALUATION_KEY}.benchmarks"

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
    problems += benchmark_problems(values)
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


def benchmark_names(values: Mapping[str, Any]) -> list[str] | None:
    """The benchmarks an `evaluation` block names (evaluation.benchmarks), or None: the run's
    own dataset only. Assumes the block passed `benchmark_problems`."""
    names = values.get("benchmarks")
    return None if names is None else [str(name) for name in names]


def benchmark_problems(values: Mapping[str, Any]) -> list[Problem]:
    """evaluation.benchmarks is null or a non-empty list of distinct dataset group names, and
    evaluation.benchmark_overrides maps some of those names to partial dataset blocks."""
    names = values.get("benchmarks")
    overrides = values.get("benchmark_overrides") or {}
    problems = []
    if names is not None:
        problems += _name_problems(names)
    if not isinstance(overrides, Mapping):
        return problems + [
            Problem(
                "benchmark_overrides",
                overrides,
                "must be a block: benchmark name -> dataset keys merged over its dataset config",
            )
        ]
    listed = [str(n) for n in names] if isinstance(names, (list, tuple)) else []
    unlisted = sorted(str(name) for name in overrides if name not in listed)
    if unlisted:
        problems.append(
            Problem(
                "benchmark_overrides",
                dict(overrides),
                f"names {unlisted}, which {{prefix}}benchmarks={listed or None} does not list",
            )
        )
    not_blocks = sorted(str(k) for k, v in overrides.items() if not isinstance(v, Mapping))
    if not_blocks:
        problems.append(
            Problem(
                "benchmark_overrides",
                dict(overrides),
                f"{not_blocks} must each be a block of dataset keys (e.g. {{{{source: hub}}}})",
            )
        )
    return problems


def _name_problems(names: Any) -> list[Problem]:
    available = group_options(BENCHMARK_GROUP)
    if not isinstance(names, (list, tuple)) or not names:
        return [
            Problem(
                "benchmarks",
                names,
                "must be null (the run's own dataset) or a non-empty list of dataset group "
                f"names, e.g. [medmcqa, medqa, pubmedqa] (groups: {available})",
            )
        ]
    unknown = [name for name in names if name not in available]
    if unknown:
        return [
            Problem(
                "benchmarks",
                list(names),
                f"names {unknown}, which are not dataset groups; choose from {available}",
            )
        ]
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        return [Problem("benchmarks", list(names), f"lists {repeated} more than once")]
    return []
