"""Metrics of open-ended predictions (format=free_text): text overlap with the reference.

Every score is per item in [0, 1] (medrl/rewards/overlap.py and medrl/evaluation/bertscore.py
define them); the reported value is the mean over items with a percentile bootstrap 95% interval
over items (`bootstrap_mean`), like every non-proportion metric of `compute_metrics`. An answer
that did not parse (empty) scores 0 on every metric, as a wrong answer does in accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medrl.evaluation.bertscore import BertScoreSettings, bertscore_f1
from medrl.evaluation.metrics import bootstrap_mean, proportion
from medrl.evaluation.predictions import Prediction
from medrl.rewards import overlap
from medrl.rewards.judge.setup import RUBRICS_DIR
from medrl.utils.config import defaults_from_config


@dataclass(frozen=True)
@defaults_from_config("evaluation/default", "text_metrics", keep=("bertscore",))
class TextMetricSettings:
    """evaluation.text_metrics: how open-ended answers are scored.

    rouge_use_stemmer:  Porter-stem tokens before ROUGE-L's longest common subsequence.
    bertscore:          the encoder and its layer (`BertScoreSettings`).
    judge_rubrics:      rubrics (medrl/rewards/judge/rubrics/<name>.yaml) whose judge score is
                        reported when the run has a judge (judge=local | hosted;
                        medrl/evaluation/judge_metrics.py); ignored without one.
    """

    # Defaults: conf/evaluation/default.yaml's evaluation.text_metrics.
    rouge_use_stemmer: bool
    bertscore: BertScoreSettings = field(default_factory=BertScoreSettings)
    judge_rubrics: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "judge_rubrics", tuple(self.judge_rubrics))
        known = sorted(path.stem for path in RUBRICS_DIR.glob("*.yaml"))
        unknown = [name for name in self.judge_rubrics if name not in known]
        if unknown:
            raise ValueError(
                f"evaluation.text_metrics.judge_rubrics: no rubric {unknown}; the rubrics: {known}"
            )


def text_scores(
    predictions: Sequence[Prediction], settings: TextMetricSettings
) -> dict[str, list[float]]:
    """Per-item scores {metric: [n]} of predictions that carry a reference (open-ended)."""
    missing = [p.id for p in predictions if not p.reference]
    if missing:
        raise ValueError(
            f"{len(missing)} predictions have no reference text (first: {missing[0]!r}); text "
            "metrics need an open-ended format (format=free_text) on a dataset with references"
        )
    answers = [p.answer_text or "" for p in predictions]
    references = [str(p.reference) for p in predictions]
    pairs = list(zip(answers, references, strict=True))
    scores = {
        "exact_match": [overlap.exact_match(a, r) if a else 0.0 for a, r in pairs],
        "token_f1": [overlap.token_f1(a, r) if a else 0.0 for a, r in pairs],
        "rouge_l": [
            overlap.rouge_l(a, r, settings.rouge_use_stemmer) if a else 0.0 for a, r in pairs
        ],
    }
    if settings.bertscore.enabled:
        scores["bertscore_f1"] = bertscore_f1(answers, references, settings.bertscore)
    return scores


def open_ended_metrics(
    predictions: Sequence[Prediction],
    settings: TextMetricSettings,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """n; format_rate and truncated_rate (Wilson); mean_tokens and each text metric (mean over
    items, bootstrap 95% interval). All Estimates share one set of bootstrap resamples."""
    n = len(predictions)
    if n == 0:
        raise ValueError("cannot compute metrics of zero predictions")
    metrics: dict[str, Any] = {
        "n": n,
        "format_rate": proportion(sum(p.format_ok for p in predictions), n),
        "truncated_rate": proportion(sum(p.truncated for p in predictions), n),
        "mean_tokens": bootstrap_mean([p.num_tokens for p in predictions], n_boot, seed),
    }
    for name, values in text_scores(predictions, settings).items():
        metrics[name] = bootstrap_mean(values, n_boot, seed)
    return metrics
