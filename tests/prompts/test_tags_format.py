"""TagsFormat (seed 002): ``<reasoning>...</reasoning><answer>X</answer>``, parsed strictly."""

from __future__ import annotations

import pytest

from medrl.data.records import MCQ_LABELS, YES_NO_MAYBE_LABELS
from medrl.prompts import TagsFormat

FMT = TagsFormat()


def parse(completion: str, labels=MCQ_LABELS, fmt: TagsFormat = FMT):
    return fmt.parse(completion, labels)


def test_well_formed_completion_gives_answer_and_reasoning_as_explanation():
    parsed = parse("<reasoning>Gram-positive diplococci.</reasoning><answer>B</answer>")
    assert parsed.answer == "B" and parsed.format_ok
    assert parsed.explanation == "Gram-positive diplococci."


def test_whitespace_between_elements_and_inside_answer_is_allowed():
    parsed = parse("  <reasoning>\nStep 1.\nStep 2.\n</reasoning>\n\n<answer> B </answer>\n")
    assert parsed.format_ok and parsed.answer == "B"
    assert parsed.explanation == "Step 1.\nStep 2."


def test_answer_before_reasoning_is_rejected():
    parsed = parse("<answer>B</answer><reasoning>Because.</reasoning>")
    assert not parsed.format_ok and parsed.answer is None


def test_repeated_reasoning_is_rejected():
    parsed = parse("<reasoning>a</reasoning><reasoning>b</reasoning><answer>B</answer>")
    assert not parsed.format_ok and parsed.answer is None


def test_nested_reasoning_is_rejected():
    parsed = parse("<reasoning><reasoning>a</reasoning></reasoning><answer>B</answer>")
    assert not parsed.format_ok and parsed.answer is None


def test_repeated_answer_is_rejected():
    parsed = parse("<reasoning>a</reasoning><answer>A</answer><answer>B</answer>")
    assert not parsed.format_ok and parsed.answer is None


def test_text_after_the_answer_is_rejected():
    parsed = parse("<reasoning>a</reasoning><answer>B</answer>\nFinal answer: B")
    assert not parsed.format_ok and parsed.answer is None


def test_missing_reasoning_is_rejected():
    parsed = parse("<answer>B</answer>")
    assert not parsed.format_ok and parsed.answer is None


def test_empty_reasoning_keeps_the_answer_but_fails_the_format():
    parsed = parse("<reasoning>\n</reasoning><answer>B</answer>")
    assert parsed.answer == "B" and not parsed.format_ok


def test_lowercase_label_is_rejected_by_default_and_accepted_when_case_insensitive():
    completion = "<reasoning>a</reasoning><answer>b</answer>"
    assert parse(completion).answer is None
    assert parse(completion, fmt=TagsFormat(case_sensitive=False)).answer == "B"


def test_label_outside_the_set_is_rejected():
    parsed = parse("<reasoning>a</reasoning><answer>E</answer>")
    assert parsed.answer is None and not parsed.format_ok


@pytest.mark.parametrize("label", YES_NO_MAYBE_LABELS)
def test_multi_character_labels_are_parsed(label):
    parsed = parse(f"<reasoning>a</reasoning><answer>{label}</answer>", YES_NO_MAYBE_LABELS)
    assert parsed.answer == label and parsed.format_ok


def test_case_insensitive_yes_no_maybe_returns_the_canonical_lowercase_label():
    parsed = parse(
        "<reasoning>a</reasoning><answer>Maybe</answer>",
        YES_NO_MAYBE_LABELS,
        TagsFormat(case_sensitive=False),
    )
    assert parsed.answer == "maybe"
