"""XmlFormat (seed 000): ``<answer>X</answer><explanation>...</explanation>``, parsed strictly."""

from __future__ import annotations

import pytest

from medrl.data.records import MCQ_LABELS, YES_NO_MAYBE_LABELS
from medrl.prompts import XmlFormat

FMT = XmlFormat()


def parse(completion: str, labels=MCQ_LABELS, fmt: XmlFormat = FMT):
    return fmt.parse(completion, labels)


def test_well_formed_completion_gives_answer_and_explanation():
    parsed = parse("<answer>B</answer><explanation>Pneumococcus is most common.</explanation>")
    assert parsed.answer == "B"
    assert parsed.format_ok
    assert parsed.explanation == "Pneumococcus is most common."
    assert parsed.error is None


def test_whitespace_around_and_between_elements_is_allowed():
    parsed = parse("\n  <answer>B</answer>\n<explanation>Because.</explanation>  \n")
    assert parsed.format_ok and parsed.answer == "B"


def test_whitespace_around_the_label_inside_answer_is_allowed():
    parsed = parse("<answer> B\n</answer><explanation>Because.</explanation>")
    assert parsed.format_ok and parsed.answer == "B"


def test_explanation_is_returned_stripped_with_inner_newlines_kept():
    parsed = parse("<answer>B</answer><explanation>\n line one\nline two \n</explanation>")
    assert parsed.explanation == "line one\nline two"


def test_angle_brackets_that_are_not_format_tags_are_fine_in_the_explanation():
    parsed = parse("<answer>B</answer><explanation>Dose <5 mg/kg; <b>bold</b>.</explanation>")
    assert parsed.format_ok


def test_repeated_answer_tag_is_rejected():
    parsed = parse("<answer>A</answer><answer>B</answer><explanation>x</explanation>")
    assert not parsed.format_ok and parsed.answer is None
    assert "<answer>" in parsed.error


def test_nested_answer_tag_is_rejected():
    parsed = parse("<answer><answer>A</answer></answer><explanation>x</explanation>")
    assert not parsed.format_ok and parsed.answer is None


def test_answer_tag_inside_the_explanation_is_rejected():
    parsed = parse("<answer>A</answer><explanation>or <answer>B</answer></explanation>")
    assert not parsed.format_ok and parsed.answer is None


def test_elements_in_the_wrong_order_are_rejected():
    parsed = parse("<explanation>Because.</explanation><answer>B</answer>")
    assert not parsed.format_ok and parsed.answer is None


def test_closing_tag_before_opening_tag_is_rejected():
    parsed = parse("<answer>B</explanation><explanation>x</answer>")
    assert not parsed.format_ok


@pytest.mark.parametrize(
    "completion",
    [
        "Answer: <answer>B</answer><explanation>Because.</explanation>",
        "<answer>B</answer><explanation>Because.</explanation> I hope this helps!",
        "<answer>B</answer> so <explanation>Because.</explanation>",
        "<think>hmm</think><answer>B</answer><explanation>Because.</explanation>",
    ],
    ids=["text-before", "text-after", "text-between", "think-block"],
)
def test_text_outside_the_two_elements_is_rejected(completion):
    parsed = parse(completion)
    assert not parsed.format_ok and parsed.answer is None


def test_missing_explanation_element_is_rejected():
    parsed = parse("<answer>B</answer>")
    assert not parsed.format_ok and parsed.answer is None
    assert "<explanation>" in parsed.error


def test_empty_explanation_keeps_the_answer_but_fails_the_format():
    parsed = parse("<answer>B</answer><explanation>  </explanation>")
    assert parsed.answer == "B"
    assert not parsed.format_ok
    assert parsed.explanation is None


def test_uppercase_tag_names_are_not_tags():
    parsed = parse("<ANSWER>B</ANSWER><EXPLANATION>x</EXPLANATION>")
    assert not parsed.format_ok


def test_lowercase_label_is_rejected_by_default():
    parsed = parse("<answer>b</answer><explanation>Because.</explanation>")
    assert parsed.answer is None and not parsed.format_ok
    assert "'b'" in parsed.error


def test_lowercase_label_is_accepted_as_the_canonical_label_when_case_insensitive():
    parsed = parse(
        "<answer>b</answer><explanation>Because.</explanation>",
        fmt=XmlFormat(case_sensitive=False),
    )
    assert parsed.answer == "B" and parsed.format_ok


@pytest.mark.parametrize("label", ["E", "AB", "A, B", "B.", "(B)", "Option B", ""])
def test_anything_but_exactly_one_label_is_rejected(label):
    parsed = parse(f"<answer>{label}</answer><explanation>Because.</explanation>")
    assert parsed.answer is None and not parsed.format_ok


@pytest.mark.parametrize("label", YES_NO_MAYBE_LABELS)
def test_multi_character_labels_are_parsed(label):
    parsed = parse(
        f"<answer>{label}</answer><explanation>Because.</explanation>", YES_NO_MAYBE_LABELS
    )
    assert parsed.answer == label and parsed.format_ok


def test_mcq_letter_is_not_a_yes_no_maybe_label():
    parsed = parse("<answer>A</answer><explanation>Because.</explanation>", YES_NO_MAYBE_LABELS)
    assert parsed.answer is None


def test_error_message_stays_short_for_a_huge_label():
    parsed = parse(f"<answer>{'x' * 100_000}</answer><explanation>e</explanation>")
    assert not parsed.format_ok
    assert len(parsed.error) < 200
