"""Every reward returns a float in its documented range on arbitrary text, for every format."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord
from medrl.prompts import FORMATS
from medrl.rewards import REWARDS, RewardSample, build_reward_set

# The explanations are the references the text rewards (token_f1, rouge_l) score against.
RECORDS = [
    QARecord(
        id="mcq",
        question="q",
        options={"A": "a", "B": "b", "C": "c", "D": "d"},
        answer="B",
        explanation="B, because the reason is b.",
    ),
    QARecord(
        id="pqa",
        question="q",
        options={x: x for x in YES_NO_MAYBE_LABELS},
        answer="maybe",
        explanation="Maybe: the trial was small.",
    ),
]
# Every reward is documented to lie in [0, 1]; some only take a few values.
DISCRETE = {
    name: {0.0, 1.0}
    for name in ["correctness", "format", "json_valid", "json_schema", "reasoning_tags"]
} | {"explanation_length": {0.0, 0.5, 1.0}}
# Pieces of every format, so generated text often comes close to well-formed.
FRAGMENTS = [
    "<answer>",
    "</answer>",
    "<explanation>",
    "</explanation>",
    "<reasoning>",
    "</reasoning>",
    "B",
    "maybe",
    " ",
    "\n",
    '{"predicted_category": "B"',
    ', "reason": "',
    '"',
    "}",
    ', "confidence": 0.5',
    ".",
]

completions = st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join))
samples = st.builds(
    RewardSample,
    record=st.sampled_from(RECORDS),
    output_format=st.sampled_from([cls() for cls in FORMATS.values()]),
    completion_tokens=st.integers(min_value=0, max_value=2_000),
)


@pytest.mark.parametrize("name", sorted(REWARDS))
@settings(max_examples=200, deadline=None)
@given(completion=completions, sample=samples)
def test_every_reward_is_a_float_in_its_range_on_arbitrary_text(name, completion, sample):
    value = REWARDS[name](completion, sample)
    assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert value in DISCRETE.get(name, {value})


@settings(max_examples=200, deadline=None)
@given(completion=completions, sample=samples)
def test_reward_set_total_is_the_weighted_sum_of_its_components(completion, sample):
    rewards = build_reward_set(
        {"correctness": {"weight": 2.0}, "format": {"weight": 1.0}, "brevity": {"weight": 0.5}}
    )
    breakdown = rewards.score(completion, sample)
    c = breakdown.components
    assert breakdown.total == pytest.approx(2 * c["correctness"] + c["format"] + 0.5 * c["brevity"])
    assert breakdown.parse_ok == (c["format"] == 1.0)
