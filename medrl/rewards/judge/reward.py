"""Judge rewards: a rubric scored by the judge, as a reward component of a reward set.

Unlike the pure reward functions, a judge reward scores a whole batch at once (every
completion of a rollout step concurrently, `score_many`); calling it on one completion works
too (preflight does), as a batch of one.

What is judged: with an open-ended format (free_text) the parsed prose answer; with a closed
format the whole stripped completion (label and explanation together). A completion that does not
parse scores 0 without asking the judge: that is a format failure (reward/parse_fail), not a
judge failure.

Judge failures (unreachable server, refused request, timeout, a reply that is not a score) are
counted per batch (`reward/judge_fail`, and per kind) and scored by `on_failure`:
- `batch_mean` (default): the mean of this rubric's successful scores in the same batch (0.5
  when none succeeded), so a failure pushes its completion's advantage neither up nor down much
  and never looks like a real 0 or 1;
- `zero`: 0;
- `raise`: stop the run with the failure named.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from medrl.rewards.base import RewardSample
from medrl.rewards.judge.client import FAILURES, JudgeClient, JudgeRequest, Verdict
from medrl.rewards.judge.rubrics import Rubric

ON_FAILURE = ("batch_mean", "zero", "raise")
NEUTRAL = 0.5  # the batch_mean score when no judgement of the batch succeeded


class JudgeFailureError(RuntimeError):
    """A judge failure under on_failure=raise."""


@dataclass(frozen=True)
class JudgedBatch:
    """Scores of a batch in [0, 1] and what failed: failures[i] is None or one of FAILURES."""

    scores: list[float]
    failures: list[str | None]

    def metrics(self, name: str) -> dict[str, float]:
        """reward/<name>_judge_fail and one rate per failure kind (over the batch)."""
        n = len(self.failures)
        counts = Counter(f for f in self.failures if f is not None)
        metrics = {f"reward/{name}_judge_fail": sum(counts.values()) / n}
        metrics |= {f"reward/{name}_judge_fail_{kind}": counts[kind] / n for kind in FAILURES}
        return metrics


class JudgeReward:
    """A reward component scored by `client` under `rubric` (see the module docstring)."""

    batched = True

    def __init__(self, rubric: Rubric, client: JudgeClient, on_failure: str = "batch_mean"):
        if on_failure not in ON_FAILURE:
            raise ValueError(f"judge on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
        self.rubric, self.client, self.on_failure = rubric, client, on_failure
        self.__name__ = f"judge_{rubric.name}"

    def __call__(self, completion: str, sample: RewardSample) -> float:
        return self.score_many([completion], [sample]).scores[0]

    def score_many(
        self, completions: Sequence[str], samples: Sequence[RewardSample]
    ) -> JudgedBatch:
        answers = [_judged_text(c, s) for c, s in zip(completions, samples, strict=True)]
        asked = [i for i, answer in enumerate(answers) if answer is not None]
        verdicts = self.client.judge(
            self.rubric, [JudgeRequest(samples[i].record, str(answers[i])) for i in asked]
        )
        by_index: dict[int, Verdict] = dict(zip(asked, verdicts, strict=True))
        failures = [by_index[i].failure if i in by_index else None for i in range(len(answers))]
        if self.on_failure == "raise" and any(failures):
            first = next(i for i, f in enumerate(failures) if f)
            raise JudgeFailureError(
                f"judge_{self.rubric.name}: {failures[first]} on record "
                f"{samples[first].record.id!r} (reply {by_index[first].reply!r}); set "
                "judge.on_failure=batch_mean to count failures instead"
            )
        good = [v.score for v in verdicts if v.score is not None]
        fallback = (
            0.0 if self.on_failure == "zero" else (statistics.fmean(good) if good else NEUTRAL)
        )
        scores = [
            0.0
            if i not in by_index
            else (by_index[i].score if by_index[i].score is not None else fallback)
            for i in range(len(answers))
        ]
        return JudgedBatch([float(s) for s in scores], failures)


def _judged_text(completion: str, sample: RewardSample) -> str | None:
    """The text the judge grades, or None when the completion does not parse."""
    parsed = sample.parse(completion)
    if not parsed.format_ok:
        return None
    return parsed.explanation if sample.output_format.open_ended else completion.strip()
