"""The open-ended format: a prose answer, parsed whole, trained on the record's reference."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrl.data.records import MCQ_LABELS
from medrl.prompts import FreeTextFormat, MissingReferenceError, build_messages

FMT = FreeTextFormat()


@settings(max_examples=200, deadline=None)
@given(completion=st.text())
def test_parse_never_raises_and_never_gives_a_label(completion):
    parsed = FMT.parse(completion, MCQ_LABELS)
    assert parsed.answer is None
    if parsed.format_ok:
        assert parsed.explanation and parsed.explanation == parsed.explanation.strip()
    else:
        assert parsed.explanation is None and parsed.error == "empty answer"


@pytest.mark.parametrize(
    "completion, text",
    [
        (
            "  Early mobilisation did not shorten the stay.\n",
            "Early mobilisation did not shorten the stay.",
        ),
        ("Answer: It did not.", "It did not."),
        ("ANSWER:   It did not.", "It did not."),
        ("Answer: Answer: twice", "Answer: twice"),  # one prefix only
        ("Two lines.\n\nKept  as written.", "Two lines.\n\nKept  as written."),
    ],
)
def test_the_answer_is_the_whole_completion_less_whitespace_and_one_prefix(completion, text):
    parsed = FMT.parse(completion, MCQ_LABELS)
    assert parsed.format_ok and parsed.explanation == text and parsed.error is None


@pytest.mark.parametrize("completion", ["", "  \n", "Answer:", " answer:  \t"])
def test_an_empty_answer_does_not_parse(completion):
    parsed = FMT.parse(completion, MCQ_LABELS)
    assert not parsed.format_ok and parsed.explanation is None and parsed.error == "empty answer"


def test_an_empty_prefix_keeps_the_completion_as_written():
    parsed = FreeTextFormat(answer_prefix="").parse("Answer: yes", MCQ_LABELS)
    assert parsed.explanation == "Answer: yes"


def test_the_sft_target_is_the_reference_and_parses_back_to_it(pubmedqa_record):
    record = replace(pubmedqa_record, explanation="  Early mobilisation did not shorten the stay. ")
    target = FMT.render_target(record)
    assert target == "Early mobilisation did not shorten the stay."
    assert FMT.parse(target, record.labels).explanation == target


def test_a_long_reference_is_cut_on_a_word_boundary(pubmedqa_record):
    record = replace(pubmedqa_record, explanation="alpha beta gamma delta")
    assert FreeTextFormat(max_reference_chars=13).render_target(record) == "alpha beta"


@pytest.mark.parametrize("missing", [None, "", "  \n"])
def test_a_record_without_a_reference_is_refused_naming_it(mcq_record, missing):
    with pytest.raises(MissingReferenceError, match=r"record 'mcq-1' \(medmcqa\).*reference"):
        FMT.render_target(replace(mcq_record, explanation=missing))


def test_the_prompt_asks_an_open_question_without_options(mcq_record, pubmedqa_record):
    record = mcq_record
    system, user = build_messages(record, FMT)
    assert "prose" in system["content"]
    assert user["content"] == f"Question: {record.question}"
    pqa_user = build_messages(pubmedqa_record, FMT)[1]["content"]
    assert pqa_user.startswith("Context:\n") and "yes, no or maybe" not in pqa_user


def test_max_reference_chars_must_be_positive():
    with pytest.raises(ValueError, match="max_reference_chars"):
        FreeTextFormat(max_reference_chars=0)
