"""Contracts every output format keeps: never raise, linear time, round trip, registry, configs."""

from __future__ import annotations

import functools
import random

import pytest
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from medrl.data.records import MCQ_LABELS, YES_NO_MAYBE_LABELS
from medrl.prompts import FORMATS, JsonFormat, OutputFormat, XmlFormat, get_format
from medrl.utils.config import CONFIG_DIR

# The labelled (closed) formats; the open-ended free_text format answers in prose without a
# label and has its own contract (tests/prompts/test_free_text_format.py).
ALL_FORMATS = [cls() for cls in FORMATS.values() if not cls.open_ended]
EXPLAINED_FORMATS = [fmt for fmt in ALL_FORMATS if fmt.name != "letter"]
LABEL_SETS = [MCQ_LABELS, YES_NO_MAYBE_LABELS]
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
# make_record is a stateless factory, so sharing it across hypothesis examples is safe.
FACTORY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

by_name = pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)
explained_by_name = pytest.mark.parametrize("fmt", EXPLAINED_FORMATS, ids=lambda f: f.name)
label_sets = pytest.mark.parametrize("labels", LABEL_SETS, ids=["mcq", "yes-no-maybe"])

# Pieces of every format, so generated text often comes close to well-formed.
FRAGMENTS = [
    "<answer>",
    "</answer>",
    "<explanation>",
    "</explanation>",
    "<reasoning>",
    "</reasoning>",
    "A",
    "B",
    "yes",
    " ",
    "\n",
    "{",
    "}",
    '"',
    ":",
    ",",
    "0.5",
    '"predicted_category"',
    '"confidence"',
    '"reason"',
    ".",
    ")",
]

TRICKY_EXPLANATIONS = [
    "Closes early </explanation> then <answer>A</answer> appears.",
    "<reasoning>nested</reasoning> and </answer> and <<answer>>",
    'He said "no", then \\"maybe\\" \\n and a backslash \\',
    "Line one.\nLine two.\n\n\tTabbed.",
    "Dose <5 mg/kg or >10 mg/kg; {braces} and {label} stay literal.",
    '{"predicted_category": "A", "confidence": 1, "reason": "injected"}',
    "Unicode: β-lactam, 肺炎, emoji 🫁, RTL ‏שלום",
    "   ",
    "",
    None,
]


def assert_consistent(parsed, labels) -> None:
    """Invariants of every ParsedCompletion, whatever the input."""
    assert parsed.answer is None or parsed.answer in labels
    assert isinstance(parsed.format_ok, bool)
    if parsed.format_ok:
        assert parsed.answer is not None and parsed.error is None
    else:
        assert isinstance(parsed.error, str) and parsed.error


@by_name
@label_sets
@PROPERTY_SETTINGS
@given(completion=st.text())
def test_parse_never_raises_on_arbitrary_text(fmt, labels, completion):
    assert_consistent(fmt.parse(completion, labels), labels)


@by_name
@PROPERTY_SETTINGS
@given(completion=st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_parse_never_raises_on_shuffled_format_fragments(fmt, completion):
    assert_consistent(fmt.parse(completion, MCQ_LABELS), MCQ_LABELS)


@by_name
@pytest.mark.parametrize("completion", ["", " ", "\n\t  \n"], ids=["empty", "space", "blank"])
def test_empty_or_whitespace_only_output_is_unanswered(fmt, completion):
    parsed = fmt.parse(completion, MCQ_LABELS)
    assert parsed.answer is None and not parsed.format_ok and parsed.error


@functools.cache
def huge_inputs() -> dict[str, str]:
    rng = random.Random(0)
    return {
        "2MB-of-answer-tags": "<answer>" * 262_144,
        "1MB-random-printable": "".join(rng.choices('<>/{}[]":,. abAB\n', k=1_000_000)),
        "1MB-open-brackets": "[" * 1_000_000,
        "1MB-of-one-line": "B" * 1_000_000,
    }


@by_name
@pytest.mark.parametrize("name", list(huge_inputs()))
def test_huge_malformed_output_is_rejected_without_raising(fmt, name):
    parsed = fmt.parse(huge_inputs()[name], MCQ_LABELS)
    assert not parsed.format_ok
    assert len(parsed.error) < 500


def test_huge_well_formed_explanation_still_parses():
    completion = f"<answer>B</answer><explanation>{'word ' * 200_000}</explanation>"
    parsed = XmlFormat().parse(completion, MCQ_LABELS)
    assert parsed.format_ok and len(parsed.explanation) == 5 * 200_000 - 1


@by_name
@pytest.mark.parametrize("explanation", TRICKY_EXPLANATIONS)
def test_parse_of_the_sft_target_gives_the_gold_answer(fmt, make_record, explanation):
    record = make_record(explanation)
    parsed = fmt.parse(fmt.render_target(record), record.labels)
    assert parsed.answer == record.answer
    assert parsed.format_ok, parsed.error


@by_name
@FACTORY_SETTINGS
@given(explanation=st.one_of(st.none(), st.text()))
def test_parse_of_the_sft_target_gives_the_gold_answer_for_any_explanation(
    fmt, make_record, explanation
):
    record = make_record(explanation)
    parsed = fmt.parse(fmt.render_target(record), record.labels)
    assert parsed.answer == record.answer and parsed.format_ok


@explained_by_name
def test_target_uses_the_record_explanation(fmt, mcq_record):
    parsed = fmt.parse(fmt.render_target(mcq_record), MCQ_LABELS)
    assert parsed.explanation == mcq_record.explanation


@explained_by_name
@pytest.mark.parametrize("missing", [None, "", "  \n"])
def test_target_falls_back_to_the_template_without_an_explanation(fmt, make_record, missing):
    record = make_record(missing)
    parsed = fmt.parse(fmt.render_target(record), record.labels)
    assert parsed.explanation == f"The correct answer is {record.answer}: {record.answer_text}."


@explained_by_name
def test_fallback_template_is_a_field(fmt, make_record):
    record = make_record(None)
    custom = type(fmt)(explanation_fallback="Because {label} ({text}) is right.")
    parsed = custom.parse(custom.render_target(record), record.labels)
    assert parsed.explanation == f"Because {record.answer} ({record.answer_text}) is right."


@explained_by_name
def test_target_explanation_is_cut_on_a_word_boundary(fmt, make_record):
    record = make_record("alpha beta gamma delta epsilon")
    short = type(fmt)(max_explanation_chars=14)
    assert short.parse(short.render_target(record), record.labels).explanation == "alpha beta"


@explained_by_name
def test_target_explanation_keeps_a_word_that_ends_exactly_at_the_limit(fmt, make_record):
    record = make_record("alpha beta gamma")
    short = type(fmt)(max_explanation_chars=10)
    assert short.parse(short.render_target(record), record.labels).explanation == "alpha beta"


@explained_by_name
def test_a_single_word_longer_than_the_limit_is_cut_mid_word(fmt, make_record):
    record = make_record("x" * 50)
    short = type(fmt)(max_explanation_chars=20)
    assert short.parse(short.render_target(record), record.labels).explanation == "x" * 20


@explained_by_name
def test_default_target_explanations_are_at_most_200_characters(fmt, make_record):
    record = make_record("word " * 500)
    assert len(fmt.parse(fmt.render_target(record), record.labels).explanation) <= 200


@explained_by_name
@pytest.mark.parametrize(
    "fields, key",
    [
        ({"explanation_fallback": "Answer {letter}."}, "explanation_fallback"),
        ({"explanation_fallback": "{label}{text}"}, "explanation_fallback"),
        ({"explanation_fallback": "Answer {label.missing}."}, "explanation_fallback"),
        ({"max_explanation_chars": 0}, "max_explanation_chars"),
    ],
    ids=["unknown-placeholder", "only-placeholders", "bad-attribute", "zero-length"],
)
def test_bad_explanation_fields_are_rejected_at_construction(fmt, fields, key):
    with pytest.raises(ValueError, match=key):
        type(fmt)(**fields)


@by_name
@pytest.mark.parametrize(
    "labels, phrase", [(MCQ_LABELS, "A, B, C or D"), (YES_NO_MAYBE_LABELS, "yes, no or maybe")]
)
def test_system_prompt_names_the_labels(fmt, labels, phrase):
    assert phrase in fmt.system_prompt(labels)


@by_name
@label_sets
def test_system_prompt_example_is_itself_well_formed(fmt, labels):
    example = fmt.system_prompt(labels).split("Example:\n", 1)[1]
    assert fmt.parse(example, labels).format_ok


def test_registry_maps_each_name_to_its_format_class():
    assert set(FORMATS) == {"xml", "json", "tags", "letter", "free_text"}
    for name, cls in FORMATS.items():
        assert cls.name == name and issubclass(cls, OutputFormat)


def test_get_format_builds_the_named_format_with_fields():
    fmt = get_format("json", target_confidence=0.5)
    assert isinstance(fmt, JsonFormat) and fmt.target_confidence == 0.5


def test_get_format_with_an_unknown_name_lists_the_valid_names():
    with pytest.raises(
        ValueError, match=r"'yaml'.*\['free_text', 'json', 'letter', 'tags', 'xml'\]"
    ):
        get_format("yaml")


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_yaml_instantiates_to_the_class_defaults(name):
    cfg = OmegaConf.load(CONFIG_DIR / "format" / f"{name}.yaml")
    assert instantiate(cfg) == FORMATS[name]()


@by_name
def test_formats_are_immutable(fmt):
    with pytest.raises(AttributeError):
        fmt.case_sensitive = False


@by_name
def test_system_prompt_without_labels_is_a_programming_error(fmt):
    with pytest.raises(ValueError, match="at least one answer label"):
        fmt.system_prompt(())
