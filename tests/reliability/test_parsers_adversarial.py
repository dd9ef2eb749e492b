"""Every parser of model output takes any string and answers in bounded time.

"Parser" here is everything that reads a completion: each output format's ``parse``, the tag,
text and JSON helpers under them, every reward function (with every format) and a reward set's
``score``. On random text (any code point: control characters, lone surrogates, bidi marks),
on adversarial fragments (unclosed and nested tags, ``{`` and ``[`` runs, JSON edge cases) and
on inputs of a megabyte and more, each one never raises, returns its documented type, and
finishes every call within `LIMIT_S` seconds. The time bound is generous on purpose (the
linear parsers take milliseconds): it is there to catch quadratic loops and backtracking
regexes, which take minutes on these inputs (``neutralize`` took 436 s on the nested-angles
input before it became a single pass).

Tested elsewhere, not repeated here: ``parse`` never raises on ``st.text()`` and on format
fragments, and rejects four 1-2 MB inputs (tests/prompts/test_output_formats.py); every reward
lies in its range on ``st.text()`` and fragments (tests/rewards/test_reward_properties.py).
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medrl.data.records import MCQ_LABELS, QARecord
from medrl.prompts import FORMATS, ParsedCompletion
from medrl.prompts._tags import Elements, count_errors, parse_elements, tag_strings
from medrl.prompts._text import match_label, neutralize, preview, truncate_words
from medrl.prompts.json_format import DecodedJson, decode_json
from medrl.rewards import REWARDS, RewardBreakdown, RewardSample, build_reward_set

LIMIT_S = 2.0
MEGABYTE = 1_000_000
RECORD = QARecord(
    id="b12",
    question="Vitamin B12 is found only in foods of which origin?",
    options={"A": "Plant", "B": "Animal", "C": "Fungal", "D": "Mineral"},
    answer="B",
    explanation="Vitamin B12 is made by bacteria and found in animal foods.",  # the reference
)
ALL_FORMATS = [cls() for cls in FORMATS.values()]
XML_TAGS = tag_strings(("answer", "explanation"))
EVERY_REWARD = build_reward_set({name: {"weight": 1.0} for name in REWARDS})


# ---------------------------------------------------------------------------------------------
# the parsers and the contract of each one's result


def parsed_ok(result: Any) -> bool:
    """ParsedCompletion invariants (tests/prompts/test_output_formats.py states the same)."""
    return (
        isinstance(result, ParsedCompletion)
        and (result.answer is None or result.answer in MCQ_LABELS)
        and isinstance(result.format_ok, bool)
        and (result.error is None) == result.format_ok
    )


def reward_ok(result: Any) -> bool:
    return isinstance(result, float) and 0.0 <= result <= 1.0


def breakdown_ok(result: Any) -> bool:
    return (
        isinstance(result, RewardBreakdown)
        and math.isfinite(result.total)
        and set(result.components) == set(REWARDS)
        and all(reward_ok(value) for value in result.components.values())
    )


def elements_ok(result: Any) -> bool:
    if not isinstance(result, Elements):
        return False
    if result.error is None:
        return set(result.contents) == {"reasoning", "answer"}
    return isinstance(result.error, str) and result.contents == {}


def short_str(result: Any) -> bool:
    # An error message or a preview: never the whole megabyte.
    return isinstance(result, str) and len(result) < 500


Parser = tuple[Callable[[str], Any], Callable[[Any], bool]]

PARSERS: dict[str, Parser] = {
    **{
        f"{fmt.name}.parse": (functools.partial(fmt.parse, labels=MCQ_LABELS), parsed_ok)
        for fmt in ALL_FORMATS
    },
    "count_errors": (
        lambda text: count_errors(text, ("answer", "explanation")),
        lambda result: result is None or short_str(result),
    ),
    "parse_elements": (lambda text: parse_elements(text, ("reasoning", "answer")), elements_ok),
    "match_label": (
        lambda text: match_label(text, MCQ_LABELS, case_sensitive=False),
        lambda result: result is None or result in MCQ_LABELS,
    ),
    "preview": (preview, short_str),
    "neutralize": (
        lambda text: neutralize(text, XML_TAGS),
        lambda result: isinstance(result, str) and not any(tag in result for tag in XML_TAGS),
    ),
    "truncate_words": (
        lambda text: truncate_words(text, 200),
        lambda result: isinstance(result, str) and len(result) <= 200,
    ),
    "decode_json": (
        decode_json,
        lambda result: (
            isinstance(result, DecodedJson)
            and (result.error is None or isinstance(result.error, str))
        ),
    ),
    **{
        f"reward.{name}[{fmt.name}]": (
            functools.partial(fn, sample=RewardSample(RECORD, fmt, completion_tokens=100)),
            reward_ok,
        )
        for name, fn in REWARDS.items()
        for fmt in ALL_FORMATS
    },
    **{
        f"reward_set.score[{fmt.name}]": (
            functools.partial(EVERY_REWARD.score, sample=RewardSample(RECORD, fmt, 100)),
            breakdown_ok,
        )
        for fmt in ALL_FORMATS
    },
}
each_parser = pytest.mark.parametrize("name", sorted(PARSERS))


def call_in_bounded_time(name: str, text: str, label: str) -> None:
    """Call parser `name` on `text`: no exception, its contract holds, within LIMIT_S."""
    parse, contract = PARSERS[name]
    start = time.perf_counter()
    result = parse(text)
    elapsed = time.perf_counter() - start
    assert contract(result), f"{name} broke its contract on {label}: {result!r:.300}"
    assert elapsed < LIMIT_S, f"{name} took {elapsed:.2f} s on {label} ({len(text):,} chars)"


# ---------------------------------------------------------------------------------------------
# inputs

# Pieces of every format and of JSON's corner cases, so generated text is often nearly valid.
FRAGMENTS = [
    *tag_strings(("answer", "explanation", "reasoning")),
    "<answer",
    "</",
    "<",
    ">",
    "<<",
    ">>",
    "B",
    "b",
    " B ",
    "maybe",
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    '\\"',
    "\\u00",
    ":",
    ",",
    '"predicted_category"',
    '"confidence"',
    '"reason"',
    '"B"',
    "0.5",
    "1e999",
    "-0",
    "NaN",
    "Infinity",
    "true",
    "null",
    " ",
    "\n",
    "\t",
    "\x00",
    "\u202e",
    "\ufeff",
    "\ud800",
]
any_character = st.characters(exclude_categories=()) | st.characters(
    categories=["Cc", "Cf", "Cs", "Zl", "Zp"]
)
random_text = st.text(any_character, max_size=300)
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)


@functools.cache
def huge_inputs() -> dict[str, str]:
    """Named adversarial inputs of about a megabyte or more, built once."""
    rng = random.Random(0)
    n = MEGABYTE
    return {
        "unclosed <answer> x125k": "<answer>" * (n // 8),
        "<answer> nested 60k deep": "<answer>" * 60_000 + "B" + "</answer>" * 60_000,
        "well-formed pair x25k": "<reasoning>x</reasoning><answer>B</answer>" * 25_000,
        "valid xml, 1 MB explanation": f"<answer>B</answer><explanation>{'w ' * (n // 2)}"
        "</explanation>",
        "valid tags, 1 MB reasoning": f"<reasoning>{'w ' * (n // 2)}</reasoning><answer>B</answer>",
        "angles nested 500k deep": "<" * (n // 2) + "answer" + ">" * (n // 2),
        "closing angles nested": "<" * (n // 2) + "/explanation" + ">" * (n // 2),
        "1M of {": "{" * n,
        "1M of [": "[" * n,
        '{"a": nested 200k deep': '{"a":' * 200_000 + "1" + "}" * 200_000,
        "[ nested 10k deep, closed": "[" * 10_000 + "]" * 10_000,
        "valid json, 1 MB reason": '{"predicted_category": "B", "confidence": 0.5, "reason": "'
        + "x" * n
        + '"}',
        "1M-digit number": "1" * n,
        "100k keys": "{" + ",".join(f'"k{i}": {i}' for i in range(100_000)) + "}",
        "50k duplicate keys": "{" + ", ".join(['"predicted_category": "B"'] * 50_000) + "}",
        "200k \\u escapes": '"' + "\\u00e9" * 200_000 + '"',
        "random tag alphabet": "".join(rng.choices('<>/{}[]":,. abAB\n\\', k=n)),
        "random unicode": "".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(n // 4)),
        "control characters": "".join(chr(rng.randrange(0, 32)) for _ in range(n)),
        "lone surrogates": "\ud800" * n,
        "whitespace": " \t\n\r\x0b\x0c" * (n // 6),
        "label then 1M spaces": "B" + " " * n,
    }


# ---------------------------------------------------------------------------------------------
# properties

RANDOM = settings(max_examples=100, deadline=None)
HUGE = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@each_parser
@RANDOM
@given(text=random_text)
def test_any_text_with_any_code_point_is_parsed_without_raising(name, text):
    call_in_bounded_time(name, text, "random text")


@each_parser
@RANDOM
@given(text=fragment_text)
def test_adversarial_fragments_are_parsed_without_raising(name, text):
    call_in_bounded_time(name, text, "fragments")


@each_parser
@HUGE
@given(unit=st.one_of(random_text, fragment_text).filter(bool))
def test_a_random_unit_repeated_to_a_megabyte_is_parsed_in_bounded_time(name, unit):
    text = unit * -(-MEGABYTE // len(unit))
    call_in_bounded_time(name, text, f"{unit[:40]!r} repeated")


@each_parser
def test_each_adversarial_megabyte_input_is_parsed_in_bounded_time(name):
    for label, text in huge_inputs().items():
        call_in_bounded_time(name, text, label)


# ---------------------------------------------------------------------------------------------
# neutralize: one pass, same result as replacing until no tag is left


def neutralize_by_repeated_replacing(text: str, forbidden: tuple[str, ...]) -> str:
    """The definition `neutralize` must match (its implementation before the one-pass rewrite)."""
    while any(tag in text for tag in forbidden):
        for tag in forbidden:
            text = text.replace(tag, tag.strip("<>"))
    return text


TAG_SETS = [
    XML_TAGS,
    tag_strings(("reasoning", "answer")),
    ("<a>", "</a>", "<b/a>", "<ab>"),  # inner names that contain one another
    (),
]
angle_text = st.lists(
    st.sampled_from(["<", ">", "/", "a", "b", "answer", "explanation", "x", " ", *XML_TAGS]),
    max_size=40,
).map("".join)


@settings(max_examples=1_000, deadline=None)
@given(text=angle_text, forbidden=st.sampled_from(TAG_SETS))
def test_neutralize_gives_what_replacing_until_no_tag_is_left_gives(text, forbidden):
    assert neutralize(text, forbidden) == neutralize_by_repeated_replacing(text, forbidden)


@pytest.mark.parametrize("tag", ["answer", "<answer", "<>", "<a<b>", "<a>b>"])
def test_neutralize_refuses_a_forbidden_string_that_is_not_one_tag(tag):
    with pytest.raises(ValueError, match="neutralize needs tag strings like '<name>'"):
        neutralize("text", (tag,))
