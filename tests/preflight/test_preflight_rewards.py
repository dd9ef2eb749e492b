"""Checks 4 and 6: the reward yaml's components, and the reward set scoring a real gold answer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord
from medrl.preflight import PreflightError, preflight_config, run_preflight
from medrl.preflight.rewards import check_gold_scores_best, reward_max
from medrl.prompts import get_format
from medrl.rewards import REWARDS, build_reward_set
from medrl.rewards.judge import JUDGE_REWARDS
from tests.data.builders import write_bioasq

MCQ = QARecord(
    id="b12",
    question="Vitamin B12 is found only in foods of which origin?",
    options={"A": "Plant", "B": "Animal", "C": "Fungal", "D": "Mineral"},
    answer="B",
    explanation="Only animal foods contain vitamin B12, made by bacteria in the animal gut.",
)
PUBMEDQA = QARecord(
    id="pqa",
    question="Does the intervention work?",
    options={label: label for label in YES_NO_MAYBE_LABELS},
    answer="maybe",
    context="A small trial.",
)


def config_error(compose, *overrides: str) -> PreflightError:
    with pytest.raises(PreflightError) as caught:
        preflight_config(compose("train", ["debug=smoke", *overrides]))
    return caught.value


def test_an_unknown_reward_name_lists_the_valid_names(compose):
    error = config_error(compose, "+reward.components.empathy.weight=1.0")
    (failure,) = error.failures
    assert failure.key == "reward.components.empathy"
    assert failure.message.startswith("reward.components.empathy: unknown reward 'empathy'")
    assert f"valid names: {sorted([*REWARDS, *JUDGE_REWARDS])}" in failure.message


@pytest.mark.parametrize("weight", ["nan", "inf", "heavy", "true"])
def test_a_weight_that_is_not_a_finite_number_names_its_key(compose, weight):
    error = config_error(compose, f"reward.components.format.weight={weight}")
    (failure,) = error.failures
    assert failure.key == "reward.components.format.weight"
    assert failure.message.startswith("reward.components.format.weight=")
    assert "must be a finite number" in failure.message


def test_a_parameter_the_reward_does_not_take_names_the_component(compose):
    error = config_error(compose, "+reward.components.format.strict=true")
    (failure,) = error.failures
    assert failure.key == "reward.components.format"
    assert "unknown parameter(s) ['strict']" in failure.message


def test_all_zero_weights_fail_naming_every_weight(compose):
    error = config_error(
        compose,
        "reward.components.correctness.weight=0",
        "reward.components.format.weight=0.0",
        "reward.components.explanation_length.weight=0",
    )
    (failure,) = error.failures
    assert failure.key == "reward.components"
    assert failure.message.startswith("reward.components: no weight is > 0")
    assert "reward.components.format.weight=0.0" in failure.message


def test_penalties_alone_also_fail_but_one_positive_weight_is_enough(compose):
    only_penalties = [f"reward.components.{n}.weight=-1" for n in ("correctness", "format")]
    assert config_error(
        compose, *only_penalties, "reward.components.explanation_length.weight=0"
    ).failures
    preflight_config(compose("train", ["debug=smoke", *only_penalties]))  # explanation_length: 1


def test_every_bad_component_is_reported_not_only_the_first(compose):
    error = config_error(
        compose, "+reward.components.empathy.weight=1.0", "reward.components.format.weight=nan"
    )
    assert [f.key for f in error.failures] == [
        "reward.components.format.weight",
        "reward.components.empathy",
    ]


def test_the_maximum_comes_from_the_documented_ranges_and_the_signs_of_the_weights():
    rewards = build_reward_set({"correctness": {"weight": 2.0}, "brevity": {"weight": -0.5}})
    assert reward_max(rewards) == 2.0


@pytest.mark.parametrize(
    ("fmt", "reward", "record"),
    [
        ("xml", "xml", MCQ),
        ("json", "json", MCQ),
        ("tags", "tags", MCQ),
        ("letter", "letter", MCQ),
        ("letter", "efficiency", PUBMEDQA),
    ],
)
def test_each_format_with_its_own_reward_set_gives_gold_the_maximum(compose, fmt, reward, record):
    cfg = compose("train", [f"reward={reward}"])
    rewards = build_reward_set(cfg.reward.components)
    result = check_gold_scores_best(rewards, get_format(fmt), record, count_tokens=None)
    assert result.status == "pass", result.message


def test_xml_answers_scored_by_the_json_reward_set_fail_naming_reward_and_format(preflight_error):
    error = preflight_error("format=xml", "reward=json")
    (failure,) = error.failures
    assert failure.key == "reward"
    assert failure.message.startswith(
        "reward (json_valid, json_schema, correctness) with format=xml:"
    )
    assert "gold answer scores 1, with the wrong label A 0, maximum 3" in failure.message
    assert "the gold answer must reach the maximum" in failure.message
    assert "reward=xml" in failure.message  # the group made for the format


def test_a_reward_set_blind_to_the_label_fails_the_wrong_label_comparison(preflight_error):
    error = preflight_error("~reward.components.correctness")
    (failure,) = error.failures
    assert failure.key == "reward"
    assert "a wrong label must score less than the gold answer" in failure.message


def test_a_reward_preflight_does_not_know_only_gets_a_warning(smoke, qwen_tokenizer, monkeypatch):
    """Research and test code register their own rewards (tests/algorithms/test_grpo.py does):
    preflight cannot know their range, so a label-blind one is a warning, not a failure."""
    from omegaconf import open_dict

    def distinct_characters(completion: str, sample) -> float:
        return len(set(completion)) / 32

    monkeypatch.setitem(REWARDS, "distinct", distinct_characters)
    run = smoke("stages=[grpo]")
    with open_dict(run.cfg):
        run.cfg.reward.components = {"distinct": {"weight": 1.0}}
    rewards = build_reward_set(run.cfg.reward.components)
    report = run_preflight(
        run.cfg, replace(run.specs, rewards=rewards), run.pools, tokenizer=qwen_tokenizer
    )
    (gold,) = [r for r in report.results if r.key == "reward"]
    assert gold.status == "warn" and "does not know the range of ['distinct']" in gold.message


def test_the_gold_check_uses_the_grpo_pool_and_only_runs_when_grpo_reads_rewards(preflight, smoke):
    with_grpo = preflight()
    (result,) = [r for r in with_grpo.results if r.key == "reward"]
    assert smoke().pools["grpo"][0].id in result.message
    # SFT learns from targets and evaluation from the parser: neither reads the reward set.
    sft_only = preflight("algorithm=sft", "format=letter")
    assert not [r for r in sft_only.results if r.key == "reward"]


# --- open-ended answers (format=free_text) ----------------------------------------------------


def test_free_text_on_pubmedqa_passes_with_another_records_reference_as_the_wrong_answer(
    preflight,
):
    report = preflight("dataset=pubmedqa", "format=free_text", "reward=free_text")
    gold = next(r for r in report.results if r.name == "reward_gold")
    assert gold.status == "pass", gold.message
    assert "gold answer scores 2," in gold.message and "reference answer" in gold.message
    references = [r for r in report.results if r.name == "references"]
    assert references and all(r.status == "pass" for r in references)


def test_validation_on_free_text_follows_token_f1_and_refuses_a_closed_metric(
    preflight, preflight_error
):
    open_ended = ("dataset=pubmedqa", "format=free_text", "reward=free_text")
    report = preflight(*open_ended)
    (followed,) = [r for r in report.results if r.key == "validation.metric"]
    assert (followed.status, followed.message) == ("pass", "validation follows val/token_f1")

    error = preflight_error(*open_ended, "validation.metric=accuracy")
    (failure,) = error.failures
    assert failure.key == "validation.metric"
    assert failure.message.startswith(
        "validation.metric='accuracy' is not computed for an open-ended (free-text) format"
    )
    assert "'token_f1'" in failure.message


def test_a_text_metric_on_a_closed_format_is_refused(preflight_error):
    (failure,) = preflight_error("validation.metric=rouge_l").failures
    assert failure.key == "validation.metric"
    assert "is not computed for a closed format" in failure.message


def test_free_text_on_a_dataset_without_references_fails_naming_the_format(preflight_error):
    error = preflight_error("dataset=medmcqa", "format=free_text", "reward=free_text")
    failures = [f for f in error.failures if f.name == "references"]
    assert failures and all(f.key == "format" for f in failures)
    assert "format=free_text needs a reference answer per record" in failures[0].message
    assert "dataset=pubmedqa" in failures[0].message


def test_a_closed_format_on_an_open_ended_dataset_fails_naming_the_format(
    preflight_error, tmp_path
):
    folder = write_bioasq(tmp_path / "bioasq")
    data = ["dataset=bioasq", "dataset.source=local", f"dataset.local.dir={folder}"]
    sizes = ["dataset.pools.eval.size=4", "dataset.pools.sft.size=4", "dataset.pools.val.size=2"]

    error = preflight_error(*data, *sizes, "format=xml", "reward=xml")

    failures = [f for f in error.failures if f.name == "labels"]
    assert failures and all(f.key == "format" for f in failures)
    assert "are open-ended questions without labels" in failures[0].message
    assert "use format=free_text" in failures[0].message


def test_open_ended_gold_check_compares_with_another_records_reference():
    fmt, rewards = get_format("free_text"), build_reward_set({"token_f1": {"weight": 1.0}})
    other = replace(MCQ, id="other", explanation="A different text entirely.")
    passing = check_gold_scores_best(rewards, fmt, MCQ, None, other)
    assert passing.status == "pass" and "record other's reference answer 0" in passing.message
    same = check_gold_scores_best(
        rewards, fmt, MCQ, None, replace(other, explanation=MCQ.explanation)
    )
    assert same.status == "fail"
    assert "another record's answer must score less than the gold answer" in same.message
    alone = check_gold_scores_best(rewards, fmt, MCQ, None)
    assert alone.status == "skip"
