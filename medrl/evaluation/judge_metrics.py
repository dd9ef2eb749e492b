"""The judge's score as an evaluation metric of open-ended answers, when a judge is set.

For each rubric in `evaluation.text_metrics.judge_rubrics` (the files of the judge rewards,
medrl/rewards/judge/rubrics/), every parsed answer is graded against its record (question,
reference, context) by the run's judge (`judge=local | hosted`), all items concurrently and
through the run's verdict cache. Reported, beside the text metrics:

  judge_<rubric>            mean verdict in [0, 1] over the judged items, with a percentile
                            bootstrap 95% interval over items; an answer that did not parse
                            scores 0 (as in the text metrics);
  judge_<rubric>_fail_rate  judgements that failed (unreachable, refused, timeout, unparsed
                            reply) over the items (Wilson interval). A failed item is left out
                            of the mean, never given a score it did not get.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medrl.data.records import QARecord
from medrl.evaluation.metrics import Estimate, bootstrap_mean, proportion
from medrl.evaluation.predictions import Prediction
from medrl.rewards.judge import JudgeRequest, JudgeSetup, load_rubric
from medrl.rewards.judge.setup import shipped_rubric


def judge_metrics(
    predictions: Sequence[Prediction],
    records: Mapping[str, QARecord],
    judge: JudgeSetup,
    rubrics: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """{judge_<rubric>: Estimate, judge_<rubric>_fail_rate: Estimate} per rubric name;
    `records` maps each prediction's id to its record."""
    client = judge.client()
    asked = [p for p in predictions if p.answer_text]  # an unparsed answer is not sent
    requests = [JudgeRequest(records[p.id], str(p.answer_text)) for p in asked]
    metrics: dict[str, Any] = {}
    for name in rubrics:
        verdicts = client.judge(load_rubric(shipped_rubric(name)), requests)
        by_id = {p.id: v.score for p, v in zip(asked, verdicts, strict=True)}
        # in item order: a judged item's score (None when the judgement failed), else 0
        scores = [by_id.get(p.id, 0.0) for p in predictions]
        kept = [score for score in scores if score is not None]
        metrics[f"judge_{name}"] = (
            bootstrap_mean(kept, n_boot, seed) if kept else Estimate.undefined()
        )
        metrics[f"judge_{name}_fail_rate"] = proportion(len(scores) - len(kept), len(scores))
    return metrics
