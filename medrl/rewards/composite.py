"""A weighted sum of named reward functions, built and validated from a reward yaml.

``total = sum_k weight_k * reward_k(completion, sample, **params_k)``

Weights may be zero (the component is still computed and logged) or negative (a penalty).
"""

from __future__ import annotations

import functools
import inspect
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medrl.rewards.base import RewardFn, RewardSample
from medrl.rewards.judge import JUDGE_REWARDS, JudgeClient, JudgedBatch, JudgeReward, JudgeSetup
from medrl.rewards.registry import PARAM_CHECKS, REWARDS, get_reward
from medrl.utils.timing import timed

# Every reward function takes these two positionally; everything else is a parameter.
_CALL_ARGS = ("completion", "sample")


@dataclass(frozen=True)
class RewardComponent:
    """One named reward function with its weight and bound parameters."""

    name: str
    fn: RewardFn
    weight: float
    params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, completion: str, sample: RewardSample) -> float:
        """The unweighted reward; a non-finite value raises, naming the component (advantages
        of a nan or inf reward are meaningless, and one would poison its whole group)."""
        value = float(self.fn(completion, sample, **self.params))
        if not math.isfinite(value):
            raise ValueError(
                f"reward {self.name!r} returned {value} for record {sample.record.id!r}; reward "
                "functions must return finite numbers"
            )
        return value


@dataclass(frozen=True)
class RewardBreakdown:
    """The score of one completion: weighted total, unweighted components, strict-parse success,
    and for each judge component its failure (None, or how the judgement failed)."""

    total: float
    components: dict[str, float]
    parse_ok: bool
    judge_failures: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardSet:
    """A weighted sum of reward components; build it with `build_reward_set`."""

    components: tuple[RewardComponent, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    @property
    def judges(self) -> tuple[RewardComponent, ...]:
        """The components scored by an LLM judge (batched; see medrl/rewards/judge/)."""
        return tuple(c for c in self.components if getattr(c.fn, "batched", False))

    def without_judges(self) -> RewardSet | None:
        """The same set less its judge components (None when nothing is left): what can be
        checked without asking a judge."""
        rest = tuple(c for c in self.components if c not in self.judges)
        return RewardSet(rest) if rest else None

    def score(self, completion: str, sample: RewardSample) -> RewardBreakdown:
        """Score one completion. ``parse_ok`` is the sample format's ``format_ok``."""
        values = {c.name: c(completion, sample) for c in self.components}
        total = math.fsum(c.weight * values[c.name] for c in self.components)
        return RewardBreakdown(total, values, sample.parse(completion).format_ok)

    def score_many(
        self,
        completions: Sequence[str],
        samples: Sequence[RewardSample],
        timings: dict[str, float] | None = None,
    ) -> list[RewardBreakdown]:
        """`score` of each completion, with each judge component asked once for the whole
        batch (concurrently); its wall time goes to timings["judge"]."""
        if len(completions) != len(samples):
            raise ValueError(
                f"{len(completions)} completions but {len(samples)} samples; they pair up"
            )
        judged: dict[str, JudgedBatch] = {}
        with timed(timings if self.judges else None, "judge"):
            for c in self.judges:
                judged[c.name] = c.fn.score_many(completions, samples)
        breakdowns = []
        for i, (completion, sample) in enumerate(zip(completions, samples, strict=True)):
            values = {
                c.name: judged[c.name].scores[i] if c.name in judged else c(completion, sample)
                for c in self.components
            }
            total = math.fsum(c.weight * values[c.name] for c in self.components)
            failures = {name: batch.failures[i] for name, batch in judged.items()}
            parse_ok = sample.parse(completion).format_ok
            breakdowns.append(RewardBreakdown(total, values, parse_ok, failures))
        return breakdowns

    def score_batch(
        self, completions: Sequence[str], samples: Sequence[RewardSample]
    ) -> tuple[list[float], dict[str, float]]:
        """Totals for a batch, and its metrics.

        Metrics: ``reward/total`` (mean), ``reward/total_std`` (population std),
        ``reward/<name>`` (mean of each unweighted component) and ``reward/parse_fail``
        (fraction of completions whose strict parse failed, i.e. ``format_ok`` False).
        """
        if len(completions) != len(samples):
            raise ValueError(
                f"{len(completions)} completions but {len(samples)} samples; they pair up"
            )
        if not completions:
            raise ValueError("score_batch needs at least one completion")
        scores = self.score_many(completions, samples)
        totals = [s.total for s in scores]
        metrics = {
            "reward/total": statistics.fmean(totals),
            "reward/total_std": statistics.pstdev(totals),
        }
        for name in self.names:
            metrics[f"reward/{name}"] = statistics.fmean(s.components[name] for s in scores)
        metrics["reward/parse_fail"] = statistics.fmean(0.0 if s.parse_ok else 1.0 for s in scores)
        metrics |= judge_failure_metrics([s.judge_failures for s in scores])
        return totals, metrics


def judge_failure_metrics(failures: Sequence[Mapping[str, str | None]]) -> dict[str, float]:
    """reward/judge_fail (failed judgements / judgements, over every judge component) and
    reward/<name>_judge_fail per judge component; {} when the set has no judge."""
    names = list(dict.fromkeys(name for item in failures for name in item))
    if not names:
        return {}
    per_name = {name: [item.get(name) is not None for item in failures] for name in names}
    metrics = {"reward/judge_fail": statistics.fmean(f for v in per_name.values() for f in v)}
    metrics |= {f"reward/{name}_judge_fail": statistics.fmean(v) for name, v in per_name.items()}
    return metrics


def _parameter_names(fn: RewardFn) -> tuple[str, ...]:
    """The keyword parameters `fn` accepts besides (completion, sample)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in kinds and p.name not in _CALL_ARGS
    )


def reward_weight(name: str, spec: Mapping[str, Any]) -> float:
    """The component's weight; ValueError unless a finite number (a bool is a yaml slip)."""
    if "weight" not in spec:
        raise ValueError(f"reward {name!r}: missing 'weight'")
    weight = spec["weight"]
    # bool is an int subclass, but `weight: true` is a yaml slip, not a weight of 1.
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
    ):
        raise ValueError(f"reward {name!r}: 'weight' must be a finite number, got {weight!r}")
    return float(weight)


def _params(name: str, fn: RewardFn, spec: Mapping[str, Any]) -> dict[str, Any]:
    params = {str(k): v for k, v in spec.items() if k != "weight"}
    accepted = _parameter_names(fn)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"reward {name!r}: unknown parameter(s) {unknown}; "
            f"it accepts {list(accepted) or 'no parameters'}"
        )
    check = PARAM_CHECKS.get(name)
    if check is not None:
        bound = inspect.signature(fn).bind(None, None, **params)
        bound.apply_defaults()
        check(**{k: v for k, v in bound.arguments.items() if k not in _CALL_ARGS})
    return params


def _component(name: str, spec: Any, judge: Callable[..., JudgeReward] | None) -> RewardComponent:
    if not isinstance(spec, Mapping):
        raise ValueError(f"reward {name!r}: expected a mapping like {{weight: 1.0}}, got {spec!r}")
    if name in JUDGE_REWARDS:
        if judge is None:
            raise ValueError(
                f"reward {name!r} needs a judge endpoint: add judge=local (a `transformers "
                "serve` on this machine: make judge-server) or judge=hosted (any "
                "OpenAI-compatible API)"
            )
        params = {str(k): v for k, v in spec.items() if k != "weight"}
        unknown = sorted(set(params) - {"rubric"})
        if unknown:
            raise ValueError(
                f"reward {name!r}: unknown parameter(s) {unknown}; it accepts ['rubric']"
            )
        return RewardComponent(name, judge(name, **params), reward_weight(name, spec), {})
    fn = get_reward(name)
    return RewardComponent(name, fn, reward_weight(name, spec), _params(name, fn, spec))


def build_reward_set(
    components: Mapping[str, Mapping[str, Any]], judge_setup: JudgeSetup | None = None
) -> RewardSet:
    """Build a `RewardSet` from ``{name: {weight: w, **params}}``, validating everything.

    Raises ValueError naming the offending key for: an unknown reward name (listing the valid
    ones), a missing or non-numeric weight, a parameter the function does not accept, a
    parameter value its check rejects, or a judge reward (JUDGE_REWARDS) without a
    `judge_setup` (the `judge` config group).
    Judge rewards of one set share one client and cache. Order of `components` is the order of
    the metrics.
    """
    if not isinstance(components, Mapping) or not components:
        raise ValueError(
            f"components must be a non-empty mapping of reward names "
            f"{sorted([*REWARDS, *JUDGE_REWARDS])} to {{weight: ..., **params}}, got {components!r}"
        )
    make_judge = None
    if judge_setup is not None and any(str(name) in JUDGE_REWARDS for name in components):
        client = judge_setup.client()
        make_judge = functools.partial(_judge_reward, judge_setup, client)
    return RewardSet(
        tuple(_component(str(name), spec, make_judge) for name, spec in components.items())
    )


def _judge_reward(setup: JudgeSetup, client: JudgeClient, name: str, rubric: str | None = None):
    return setup.reward(name, client, rubric)
