"""Validation during training: its settings, its schedule and its checkpoint-selection rule.

Pure pieces (no model, no I/O): `ValidationSettings` (the `validation` block, conf/validation/,
checked by its one validation, which the stages and preflight share), `validation_steps` (when
it runs), `validation_metrics` (the val/ metrics of one validation's predictions) and
`BestTracker` (which validation is best, and when patience runs out). The Lightning callback
that generates and logs is medrl.stages.validation.GenerationValidation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medrl.evaluation.bertscore import BertScoreSettings
from medrl.evaluation.metrics import GENERATION_ONLY, compute_metrics, flat_metrics
from medrl.evaluation.predictions import Prediction
from medrl.evaluation.text_metrics import TextMetricSettings, open_ended_metrics
from medrl.utils.config import defaults_from_config
from medrl.utils.settings import (
    Problem,
    SettingsBlock,
    choice_rule,
    count_rule,
    is_count,
    is_number,
    non_negative,
)

SELECT_CHOICES = ("last", "best")
MODE_CHOICES = ("max", "min")
# The val metrics a selection or early stop can follow. Closed formats (letters, yes/no/maybe)
# get every scalar of medrl.evaluation.metrics.compute_metrics (accuracy, what only generation
# measures, and the label-based scores); open-ended ones the scalars of
# text_metrics.open_ended_metrics without BERTScore (validation stays cheap and offline).
CLOSED_METRICS = ("accuracy", *GENERATION_ONLY, "chance_corrected_accuracy", "macro_f1")
OPEN_ENDED_METRICS = (
    "format_rate",
    "truncated_rate",
    "mean_tokens",
    "exact_match",
    "token_f1",
    "rouge_l",
)
SELECTABLE_METRICS = tuple(dict.fromkeys(CLOSED_METRICS + OPEN_ENDED_METRICS))
# Bootstrap resamples of a validation's non-proportion intervals: fewer than the eval stage's
# 2000, because validation runs many times during training and its intervals are a guide.
VALIDATION_BOOTSTRAP = 500


def _patience_ok(value: Any) -> bool:
    return value is None or is_count(value, 1)


def _metric_ok(value: Any) -> bool:
    return value is None or value in SELECTABLE_METRICS


@dataclass(frozen=True)
@defaults_from_config("validation/default")
class ValidationSettings(SettingsBlock):
    """The `validation` block (conf/validation/default.yaml holds the defaults and says what
    each key means): greedy validation on a held-out pool during the SFT and GRPO stages, and
    which weights each stage's checkpoint keeps (`select`)."""

    BLOCK = "validation"
    RULES = (
        ("every", *count_rule(0, "optimizer steps between validations; 0 = off")),
        ("pool", lambda v: isinstance(v, str) and bool(v), "must name a dataset pool"),
        ("limit", lambda v: v is None or is_count(v, 1), "must be null (all) or an integer >= 1"),
        ("batch_size", *count_rule(1, "prompts per generate call")),
        ("max_new_tokens", *count_rule(1, "tokens per completion")),
        ("select", *choice_rule(SELECT_CHOICES)),
        ("metric", _metric_ok, f"must be null (the format's default) or in {SELECTABLE_METRICS}"),
        ("closed_metric", *choice_rule(CLOSED_METRICS)),
        ("open_ended_metric", *choice_rule(OPEN_ENDED_METRICS)),
        ("mode", *choice_rule(MODE_CHOICES)),
        ("min_delta", lambda v: is_number(v) and non_negative(v), "must be a number >= 0"),
        ("patience", _patience_ok, "must be null (never stop early) or an integer >= 1"),
    )

    every: int
    pool: str
    limit: int | None
    batch_size: int
    max_new_tokens: int
    select: str
    metric: str | None
    closed_metric: str
    open_ended_metric: str
    mode: str
    min_delta: float
    patience: int | None

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[Problem]:
        problems = super().check(values)
        merged = {**cls.defaults(), **values}
        off = merged.get("every") == 0
        if off and merged.get("select") == "best":
            problems.append(
                Problem("select", "best", "needs {prefix}every > 0 (best of which validations?)")
            )
        if off and merged.get("patience") is not None:
            problems.append(
                Problem("patience", merged["patience"], "needs {prefix}every > 0 to count")
            )
        return problems

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def metric_for(self, open_ended: bool) -> str:
        """The val metric that selection and patience follow for a task of this kind: `metric`
        when set, else the kind's default (closed_metric / open_ended_metric)."""
        if self.metric is not None:
            return self.metric
        return self.open_ended_metric if open_ended else self.closed_metric


def metric_problem(metric: str, open_ended: bool) -> str | None:
    """Why `metric` cannot be followed for a task of this kind (None when it can): accuracy
    and the letter metrics need gold labels, the text metrics need reference answers."""
    kind, valid = (
        ("an open-ended (free-text) format", OPEN_ENDED_METRICS)
        if open_ended
        else ("a closed format", CLOSED_METRICS)
    )
    if metric in valid:
        return None
    return f"validation.metric={metric!r} is not computed for {kind}; choose one of {list(valid)}"


def validation_steps(every: int, max_steps: int) -> list[int]:
    """The optimizer steps after which validation runs in a stage of `max_steps` steps: 0 (the
    starting weights), every multiple of `every`, and `max_steps` (the weights a `last`
    checkpoint keeps). [] when `every` is 0."""
    if every == 0:
        return []
    return sorted({0, *range(every, max_steps + 1, every), max_steps})


def is_due(step: int, every: int, last_validated: int | None) -> bool:
    """Validate after optimizer step `step`? At multiples of `every`, once per step (gradient
    accumulation and GRPO's passes end several batches on the same step)."""
    return every > 0 and step % every == 0 and step != last_validated


def validation_metrics(
    predictions: Sequence[Prediction], labels: Sequence[str] | None, seed: int
) -> dict[str, Any]:
    """One validation's metrics: flat scalars (each with *_ci_low / *_ci_high, as the eval
    stage's) plus `answer_histogram` ({label: count}, "none" = unparsed) for closed formats.

    Closed formats (labels given): compute_metrics (Wilson intervals for proportions).
    Open-ended ones (labels None): exact match, token F1 and ROUGE-L against the references,
    without BERTScore (an encoder per validation would cost more than the validation)."""
    if labels is None:
        settings = TextMetricSettings(bertscore=BertScoreSettings(enabled=False))
        result = open_ended_metrics(predictions, settings, VALIDATION_BOOTSTRAP, seed)
        return flat_metrics(result) | {"n": len(predictions)}
    result = compute_metrics(predictions, labels, VALIDATION_BOOTSTRAP, seed)
    histogram = {"answer_histogram": dict(result["answer_histogram"])}
    return flat_metrics(result) | {"n": len(predictions)} | histogram


@dataclass
class BestTracker:
    """Which validation is best so far by one metric, and how many since it improved.

    A value improves on the best when it is better by more than `min_delta` (mode max: larger;
    min: smaller); nan never improves. Ties keep the earlier step (fewer steps from the start
    point). `exhausted` tells an early stop: `patience` validations in a row without one.
    """

    metric: str
    mode: str
    min_delta: float = 0.0
    patience: int | None = None
    best_step: int | None = None
    best_value: float = math.nan
    since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def update(self, step: int, metrics: Mapping[str, Any]) -> bool:
        """Record the validation of `step`; True when it is the new best."""
        value = float(metrics[self.metric])
        self.history.append({"step": step, **metrics})
        if self._improves(value):
            self.best_step, self.best_value, self.since_best = step, value, 0
            return True
        self.since_best += 1
        return False

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_step is None or math.isnan(self.best_value):
            return True
        gain = value - self.best_value if self.mode == "max" else self.best_value - value
        return gain > self.min_delta

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience

    def state(self) -> dict[str, Any]:
        """What a training-state checkpoint keeps (resuming continues the same record)."""
        return {
            "best_step": self.best_step,
            "best_value": self.best_value,
            "since_best": self.since_best,
            "history": list(self.history),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.best_step = state["best_step"]
        self.best_value = float(state["best_value"])
        self.since_best = int(state["since_best"])
        self.history = list(state["history"])
