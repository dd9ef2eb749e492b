"""LetterFormat: the completion is the label alone, with one optional "." or ")"."""

from __future__ import annotations

import pytest

from medrl.data.records import MCQ_LABELS, YES_NO_MAYBE_LABELS
from medrl.prompts import LetterFormat

FMT = LetterFormat()


@pytest.mark.parametrize("completion", ["B", " B\n", "B.", "B)", "\tB.\n"])
def test_the_bare_label_with_optional_suffix_and_whitespace_is_accepted(completion):
    parsed = FMT.parse(completion, MCQ_LABELS)
    assert parsed.answer == "B" and parsed.format_ok and parsed.error is None


@pytest.mark.parametrize(
    "completion", ["(B)", "B..", "B.)", "B. Because", "Answer: B", "B C", "**B**", "B ."]
)
def test_anything_around_the_label_beyond_one_suffix_is_rejected(completion):
    parsed = FMT.parse(completion, MCQ_LABELS)
    assert parsed.answer is None and not parsed.format_ok and parsed.error


def test_there_is_never_an_explanation():
    assert FMT.parse("B", MCQ_LABELS).explanation is None


def test_suffixes_can_be_disallowed():
    assert FMT.parse("B.", MCQ_LABELS).format_ok
    assert not LetterFormat(allowed_suffixes="").parse("B.", MCQ_LABELS).format_ok


def test_lowercase_label_is_rejected_by_default():
    assert FMT.parse("b", MCQ_LABELS).answer is None


def test_lowercase_label_is_accepted_as_the_canonical_label_when_case_insensitive():
    assert LetterFormat(case_sensitive=False).parse("b.", MCQ_LABELS).answer == "B"


def test_label_outside_the_set_is_rejected():
    assert FMT.parse("E", MCQ_LABELS).answer is None


@pytest.mark.parametrize(
    "completion, answer", [("yes", "yes"), ("no.", "no"), ("maybe\n", "maybe")]
)
def test_multi_character_labels_are_parsed(completion, answer):
    parsed = FMT.parse(completion, YES_NO_MAYBE_LABELS)
    assert parsed.answer == answer and parsed.format_ok


def test_a_label_that_itself_ends_in_a_suffix_character_matches_exactly():
    assert FMT.parse("i.v.", ("i.v.", "p.o.")).answer == "i.v."


def test_target_is_the_bare_gold_label(mcq_record, pubmedqa_record):
    assert FMT.render_target(mcq_record) == "B"
    assert FMT.render_target(pubmedqa_record) == "maybe"
