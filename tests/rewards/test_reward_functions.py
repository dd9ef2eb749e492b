"""Each reward function on hand-checked completions, at its documented boundaries."""

from __future__ import annotations

import pytest

from medrl.prompts import JsonFormat, LetterFormat, TagsFormat, XmlFormat
from medrl.rewards import (
    brevity,
    correctness,
    explanation_length,
    format_reward,
    json_schema,
    json_valid,
    reasoning_tags,
    token_efficiency,
)

XML, TAGS, LETTER, JSON = XmlFormat(), TagsFormat(), LetterFormat(), JsonFormat()


def xml(answer: str, explanation: str = "Cobalamin is made by bacteria in animals.") -> str:
    return f"<answer>{answer}</answer><explanation>{explanation}</explanation>"


# --- correctness -----------------------------------------------------------------------------


def test_correctness_is_one_for_the_gold_label(make_sample):
    assert correctness(xml("B"), make_sample(XML)) == 1.0


def test_correctness_is_zero_for_another_label(make_sample):
    assert correctness(xml("A"), make_sample(XML)) == 0.0


def test_correctness_is_zero_when_the_strict_parse_fails_even_if_the_label_appears(make_sample):
    assert correctness("The answer is B.", make_sample(XML)) == 0.0
    assert correctness(xml("B") + " extra", make_sample(XML)) == 0.0


def test_correctness_follows_the_format_case_sensitivity(make_sample):
    assert correctness(xml("b"), make_sample(XML)) == 0.0
    assert correctness(xml("b"), make_sample(XmlFormat(case_sensitive=False))) == 1.0


def test_correctness_on_json_counts_a_valid_category_even_when_the_schema_fails(make_sample):
    assert correctness('{"predicted_category": "B"}', make_sample(JSON)) == 1.0


def test_correctness_on_a_yes_no_maybe_question(make_sample, pubmedqa_record):
    assert correctness("maybe", make_sample(LETTER, record=pubmedqa_record)) == 1.0
    assert correctness("yes", make_sample(LETTER, record=pubmedqa_record)) == 0.0


# --- format ----------------------------------------------------------------------------------


def test_format_is_one_for_a_well_formed_completion_even_if_wrong(make_sample):
    assert format_reward(xml("A"), make_sample(XML)) == 1.0


def test_format_is_zero_for_a_malformed_completion(make_sample):
    assert format_reward("<answer>B</answer>", make_sample(XML)) == 0.0


def test_format_judges_against_the_samples_own_format(make_sample):
    assert format_reward("B", make_sample(LETTER)) == 1.0
    assert format_reward("B", make_sample(XML)) == 0.0


# --- json_valid / json_schema ----------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ('{"predicted_category": "B", "confidence": 0.9, "reason": "x"}', 1.0),
        ('  {"predicted_category": "B"}\n', 1.0),
        ("[1, 2]", 1.0),
        ('{"predicted_category": "B"} thanks', 0.0),
        ('```json\n{"predicted_category": "B"}\n```', 0.0),
        ("This is the answer: B", 0.0),
        ("", 0.0),
    ],
)
def test_json_valid_is_one_exactly_when_the_whole_completion_is_json(
    make_sample, completion, expected
):
    assert json_valid(completion, make_sample(XML)) == expected


def test_json_schema_needs_category_confidence_and_reason(make_sample):
    good = '{"predicted_category": "B", "confidence": 0.2, "reason": "x"}'
    assert json_schema(good, make_sample(JSON)) == 1.0
    assert json_schema('{"predicted_category": "B", "confidence": 0.2}', make_sample(JSON)) == 0.0


def test_json_schema_uses_the_samples_json_case_sensitivity(make_sample):
    lower = '{"predicted_category": "b", "confidence": 0.2, "reason": "x"}'
    assert json_schema(lower, make_sample(JSON)) == 0.0
    assert json_schema(lower, make_sample(JsonFormat(case_sensitive=False))) == 1.0


def test_json_schema_works_for_samples_of_other_formats(make_sample):
    good = '{"predicted_category": "B", "confidence": 0.2, "reason": "x"}'
    assert json_schema(good, make_sample(XML)) == 1.0


# --- explanation_length (seed 000: 20-200 chars full, 10+ half) -------------------------------


@pytest.mark.parametrize(
    "n, expected", [(1, 0.0), (9, 0.0), (10, 0.5), (19, 0.5), (20, 1.0), (200, 1.0), (201, 0.5)]
)
def test_explanation_length_boundaries(make_sample, n, expected):
    assert explanation_length(xml("A", "x" * n), make_sample(XML)) == expected


def test_explanation_length_counts_the_stripped_text(make_sample):
    assert explanation_length(xml("A", "   " + "x" * 9 + "\n\n"), make_sample(XML)) == 0.0


@pytest.mark.parametrize(
    "fmt, completion",
    [
        (TAGS, "<reasoning>" + "x" * 20 + "</reasoning><answer>B</answer>"),
        (JSON, '{"predicted_category": "B", "confidence": 1, "reason": "' + "x" * 20 + '"}'),
    ],
    ids=["tags-reasoning", "json-reason"],
)
def test_explanation_length_reads_each_formats_free_text(make_sample, fmt, completion):
    assert explanation_length(completion, make_sample(fmt)) == 1.0


@pytest.mark.parametrize(
    "fmt, completion",
    [(XML, "x" * 50), (XML, "<answer>B</answer><explanation></explanation>"), (LETTER, "B")],
    ids=["unparseable", "empty-explanation", "letter-format"],
)
def test_explanation_length_is_zero_without_an_explanation(make_sample, fmt, completion):
    assert explanation_length(completion, make_sample(fmt)) == 0.0


def test_explanation_length_thresholds_are_parameters(make_sample):
    sample = make_sample(XML)
    params = {"min_full": 5, "max_full": 8, "min_partial": 3}
    assert explanation_length(xml("A", "x" * 8), sample, **params) == 1.0
    assert explanation_length(xml("A", "x" * 9), sample, **params) == 0.5
    assert explanation_length(xml("A", "x" * 2), sample, **params) == 0.0


def test_explanation_length_with_inconsistent_thresholds_raises(make_sample):
    with pytest.raises(ValueError, match="min_partial <= min_full <= max_full"):
        explanation_length(xml("A"), make_sample(XML), min_full=30, min_partial=40)


# --- reasoning_tags (seed 002: structure only) ------------------------------------------------


@pytest.mark.parametrize(
    "completion",
    [
        "<reasoning>Step.</reasoning><answer>B</answer>",
        "<reasoning>Step.</reasoning>\n<answer>Z</answer>",
        "Sure! <reasoning>Step.</reasoning> so <answer>B</answer> done",
    ],
    ids=["strict", "invalid-label", "text-around"],
)
def test_reasoning_tags_pays_the_structure_whatever_the_label_or_outside_text(
    make_sample, completion
):
    assert reasoning_tags(completion, make_sample(TAGS)) == 1.0


@pytest.mark.parametrize(
    "completion",
    [
        "<reasoning></reasoning><answer>B</answer>",
        "<reasoning> \n </reasoning><answer>B</answer>",
        "<answer>B</answer><reasoning>Step.</reasoning>",
        "<reasoning>Step.<answer>B</answer></reasoning>",
        "<reasoning>a</reasoning><reasoning>b</reasoning><answer>B</answer>",
        "<reasoning>a</reasoning><answer>A</answer><answer>B</answer>",
        "<reasoning><reasoning>a</reasoning></reasoning><answer>B</answer>",
        "<reasoning>Step.</reasoning>",
        "</reasoning>Step.<reasoning><answer>B</answer>",
        "",
    ],
    ids=[
        "empty-reasoning",
        "blank-reasoning",
        "wrong-order",
        "answer-nested-in-reasoning",
        "repeated-reasoning",
        "repeated-answer",
        "nested-reasoning",
        "missing-answer",
        "reversed-reasoning-tags",
        "empty",
    ],
)
def test_reasoning_tags_is_zero_for_broken_structure(make_sample, completion):
    assert reasoning_tags(completion, make_sample(TAGS)) == 0.0


# --- brevity / token_efficiency (seed 004) ----------------------------------------------------


@pytest.mark.parametrize(
    "tokens, expected",
    [(0, 1.0), (64, 1.0), (65, 191 / 192), (160, 0.5), (255, 1 / 192), (256, 0.0), (10_000, 0.0)],
)
def test_brevity_is_one_up_to_the_target_then_linear_to_zero_at_the_max(
    make_sample, tokens, expected
):
    sample = make_sample(XML, tokens=tokens)
    assert brevity("anything", sample, target_tokens=64, max_tokens=256) == pytest.approx(
        expected, abs=1e-12
    )


def test_brevity_without_a_token_count_is_a_rollout_bug(make_sample):
    with pytest.raises(ValueError, match="rollout must provide"):
        brevity("B", make_sample(XML, tokens=None))


@pytest.mark.parametrize("target, maximum", [(256, 256), (300, 256), (-1, 10)])
def test_brevity_with_inconsistent_token_bounds_raises(make_sample, target, maximum):
    with pytest.raises(ValueError, match="target_tokens < max_tokens"):
        brevity("B", make_sample(XML, tokens=1), target_tokens=target, max_tokens=maximum)


@pytest.mark.parametrize(
    "completion, tokens, expected",
    [("B", 10, 1.0), ("A", 10, 0.0), ("B", 160, 0.5), ("B", 300, 0.0), ("B.", 10, 1.0)],
    ids=["right-short", "wrong-short", "right-midway", "right-too-long", "right-with-suffix"],
)
def test_token_efficiency_is_correctness_times_brevity(make_sample, completion, tokens, expected):
    sample = make_sample(LETTER, tokens=tokens)
    assert token_efficiency(completion, sample, target_tokens=64, max_tokens=256) == expected
