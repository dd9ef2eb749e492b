"""JsonFormat (seed 001): one JSON object; json_valid, schema_ok and answer are separate levels."""

from __future__ import annotations

import json

import pytest

from medrl.data.records import MCQ_LABELS, YES_NO_MAYBE_LABELS
from medrl.prompts import JsonFormat

FMT = JsonFormat()
PERFECT = '{"predicted_category": "B", "confidence": 0.9, "reason": "Pneumococcus."}'


def parse(completion: str, labels=MCQ_LABELS, fmt: JsonFormat = FMT):
    return fmt.parse(completion, labels)


def obj(**fields) -> str:
    """A completion with the perfect object's fields, some replaced or (value ...) removed."""
    base = {"predicted_category": "B", "confidence": 0.9, "reason": "Pneumococcus."}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def test_perfect_object_is_valid_schema_ok_and_answered():
    parsed = parse(PERFECT)
    assert parsed.json_valid and parsed.schema_ok and parsed.format_ok
    assert parsed.answer == "B"
    assert parsed.explanation == "Pneumococcus."
    assert parsed.error is None


def test_whitespace_around_the_object_is_allowed():
    assert parse(f"\n  {PERFECT}\n").format_ok


def test_extra_keys_are_allowed():
    assert parse(obj(differential="Haemophilus")).schema_ok


@pytest.mark.parametrize(
    "completion",
    [
        PERFECT + " I am confident.",
        "Here is my answer: " + PERFECT,
        f"```json\n{PERFECT}\n```",
        PERFECT + PERFECT,
        PERFECT[:-1],
        "{'predicted_category': 'B', 'confidence': 0.9, 'reason': 'single quotes'}",
    ],
    ids=["trailing-text", "leading-text", "code-fence", "two-objects", "truncated", "python-dict"],
)
def test_anything_but_exactly_one_json_value_is_invalid_and_unanswered(completion):
    parsed = parse(completion)
    assert not parsed.json_valid and not parsed.schema_ok and not parsed.format_ok
    assert parsed.answer is None
    assert parsed.error.startswith("invalid JSON")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(value):
    completion = f'{{"predicted_category": "B", "confidence": {value}, "reason": "x"}}'
    assert not parse(completion).json_valid


@pytest.mark.parametrize("completion", ['["B"]', '"B"', "0.9", "null"])
def test_valid_json_that_is_not_an_object_fails_the_schema(completion):
    parsed = parse(completion)
    assert parsed.json_valid and not parsed.schema_ok and parsed.answer is None


def test_missing_schema_fields_keep_the_answer_as_in_seed_001():
    parsed = parse('{"predicted_category": "B"}')
    assert parsed.json_valid and not parsed.schema_ok and not parsed.format_ok
    assert parsed.answer == "B"


@pytest.mark.parametrize("confidence", [0, 0.0, 0.5, 1, 1.0])
def test_confidence_in_the_closed_unit_interval_passes(confidence):
    assert parse(obj(confidence=confidence)).schema_ok


@pytest.mark.parametrize("confidence", [-0.01, 1.01, 95, True, False, "0.9", None, [0.9], ...])
def test_confidence_outside_the_unit_interval_or_not_a_number_fails(confidence):
    parsed = parse(obj(confidence=confidence))
    assert parsed.json_valid and not parsed.schema_ok
    assert "confidence" in parsed.error


@pytest.mark.parametrize("reason", ["", "   \n", 42, None, ["a"], ...])
def test_reason_must_be_a_non_empty_string(reason):
    parsed = parse(obj(reason=reason))
    assert not parsed.schema_ok and parsed.answer == "B"
    assert "reason" in parsed.error


@pytest.mark.parametrize("category", ["E", "b", " B", "B ", "AB", 1, None, ["B"]])
def test_category_must_be_exactly_a_label(category):
    parsed = parse(obj(predicted_category=category))
    assert parsed.json_valid and not parsed.schema_ok and parsed.answer is None


def test_lowercase_category_is_accepted_as_the_canonical_label_when_case_insensitive():
    parsed = parse(obj(predicted_category="b"), fmt=JsonFormat(case_sensitive=False))
    assert parsed.answer == "B" and parsed.schema_ok


def test_a_schema_key_given_twice_is_ambiguous_and_fails():
    completion = (
        '{"predicted_category": "A", "predicted_category": "B", "confidence": 1, "reason": "x"}'
    )
    parsed = parse(completion)
    assert parsed.json_valid and not parsed.schema_ok and parsed.answer is None
    assert "duplicate" in parsed.error


def test_duplicate_keys_outside_the_schema_are_allowed():
    completion = '{"predicted_category": "B", "confidence": 1, "reason": "x", "n": 1, "n": 2}'
    assert parse(completion).schema_ok


@pytest.mark.parametrize("label", YES_NO_MAYBE_LABELS)
def test_multi_character_labels_are_parsed(label):
    parsed = parse(obj(predicted_category=label), YES_NO_MAYBE_LABELS)
    assert parsed.answer == label and parsed.schema_ok


def test_deeply_nested_json_is_invalid_without_raising():
    parsed = parse("[" * 200_000 + "]" * 200_000)
    assert not parsed.json_valid and parsed.answer is None


def test_integer_with_too_many_digits_is_invalid_without_raising():
    huge = "9" * 10_000  # Python refuses to convert ints over 4300 digits (ValueError)
    parsed = parse(f'{{"predicted_category": "B", "confidence": {huge}, "reason": "x"}}')
    assert not parsed.json_valid


def test_target_is_json_dumps_of_label_confidence_and_explanation(mcq_record):
    target = FMT.render_target(mcq_record)
    assert json.loads(target) == {
        "predicted_category": "B",
        "confidence": 0.95,
        "reason": mcq_record.explanation,
    }


def test_target_confidence_is_configurable(mcq_record):
    target = JsonFormat(target_confidence=0.7).render_target(mcq_record)
    assert json.loads(target)["confidence"] == 0.7


@pytest.mark.parametrize("confidence", [-0.1, 1.5, float("nan")])
def test_target_confidence_outside_the_unit_interval_is_a_config_error(confidence):
    with pytest.raises(ValueError, match="target_confidence"):
        JsonFormat(target_confidence=confidence)
