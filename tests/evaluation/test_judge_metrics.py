"""The judge's score as an evaluation metric of open-ended answers (medrl/evaluation/
judge_metrics.py), against the scripted OpenAI-protocol server of tests/conftest.py."""

from __future__ import annotations

import pytest

from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord
from medrl.evaluation import Prediction, write_markdown_report
from medrl.evaluation.judge_metrics import judge_metrics
from medrl.evaluation.metrics import Estimate
from medrl.rewards.judge import JudgeSettings, JudgeSetup

RECORDS = {
    f"pqa-{i}": QARecord(
        id=f"pqa-{i}",
        question=f"Question {i}?",
        options={label: label for label in YES_NO_MAYBE_LABELS},
        answer="yes",
        explanation=f"The reference answer {i}.",
    )
    for i in range(3)
}


def prediction(record_id: str, answer_text: str | None) -> Prediction:
    return Prediction(
        id=record_id,
        prompt="p",
        completion=answer_text or "",
        answer=None,
        gold="yes",
        correct=False,
        format_ok=answer_text is not None,
        json_valid=False,
        schema_ok=False,
        num_tokens=5,
        truncated=False,
        answer_text=answer_text,
        reference=RECORDS[record_id].explanation,
    )


# two parsed answers and one that did not parse
PREDICTIONS = [
    prediction("pqa-0", "An answer."),
    prediction("pqa-1", "Another answer."),
    prediction("pqa-2", None),
]


def test_every_parsed_answer_is_judged_and_an_unparsed_one_scores_zero(scripted):
    settings = scripted(reply="4")  # 4 of 5 -> 0.75

    metrics = judge_metrics(PREDICTIONS, RECORDS, JudgeSetup(settings), ["correctness"])

    assert metrics["judge_correctness"].value == pytest.approx((0.75 + 0.75 + 0.0) / 3)
    assert metrics["judge_correctness"].n == 3
    assert metrics["judge_correctness_fail_rate"].value == 0.0


@pytest.mark.parametrize("script", [{"reply": "excellent"}, {"status": 500}])
def test_failed_judgements_are_left_out_of_the_mean_and_counted(scripted, script):
    metrics = judge_metrics(PREDICTIONS, RECORDS, JudgeSetup(scripted(**script)), ["correctness"])

    # both judged answers failed: only the unparsed answer's 0 remains in the mean
    assert (metrics["judge_correctness"].value, metrics["judge_correctness"].n) == (0.0, 1)
    assert metrics["judge_correctness_fail_rate"].value == pytest.approx(2 / 3)


def test_a_judge_that_is_down_leaves_no_score_but_its_failure_rate():
    settings = JudgeSettings(base_url="http://127.0.0.1:9/v1", timeout_s=1, retries=0)
    parsed = PREDICTIONS[:2]

    metrics = judge_metrics(parsed, RECORDS, JudgeSetup(settings), ["correctness", "relevancy"])

    for rubric in ("correctness", "relevancy"):
        assert metrics[f"judge_{rubric}"].n == 0, "undefined, not a made-up score"
        assert metrics[f"judge_{rubric}_fail_rate"].value == 1.0


def test_the_report_shows_the_judge_column_and_says_how_failures_count(tmp_path):
    estimate = Estimate(0.5, 0.4, 0.6, 3)
    results = {
        "sft": {
            "n": 3,
            "exact_match": estimate,
            "token_f1": estimate,
            "rouge_l": estimate,
            "format_rate": estimate,
            "mean_tokens": Estimate(5.0, 5.0, 5.0, 3),
            "judge_correctness": Estimate(0.75, 0.7, 0.8, 3),
            "judge_correctness_fail_rate": Estimate(0.0, 0.0, 0.5, 3),
        }
    }

    report = write_markdown_report(tmp_path / "report.md", results).read_text()

    assert "judge correctness [95% CI]" in report
    assert "0.750 [0.700, 0.800]" in report
    assert "judge_<rubric>_fail_rate" in report
