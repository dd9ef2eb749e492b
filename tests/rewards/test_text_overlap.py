"""Text overlap scores (medrl/rewards/overlap.py) and the token_f1 / rouge_l rewards, by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medrl.prompts import FreeTextFormat, MissingReferenceError, XmlFormat
from medrl.rewards import RewardSample, build_reward_set, overlap, rouge_l, token_f1

REFERENCE = "The drug lowers blood pressure."


@pytest.mark.parametrize(
    "answer, reference, expected",
    [
        ("The Cat!", "cat", 1.0),  # case, punctuation and articles are normalized away
        ("a  cat", "the cat", 1.0),
        ("cat sat", "cat", 0.0),
        ("", "cat", 0.0),
    ],
)
def test_exact_match_compares_squad_normalized_texts(answer, reference, expected):
    assert overlap.exact_match(answer, reference) == expected


@pytest.mark.parametrize(
    "answer, reference, expected",
    [
        # [cat, sat] vs [cat, sat, down]: shared 2, P = 2/2, R = 2/3, F1 = 2PR/(P+R) = 0.8
        ("The cat sat", "a cat sat down", 0.8),
        # [cat, cat, cat] vs [cat, dog]: shared min(3, 1) = 1, P = 1/3, R = 1/2, F1 = 0.4
        ("cat cat cat", "cat dog", 0.4),
        ("dog", "cat", 0.0),
        ("", "cat", 0.0),
    ],
)
def test_token_f1_counts_shared_tokens_with_multiplicity(answer, reference, expected):
    assert overlap.token_f1(answer, reference) == pytest.approx(expected)


def test_rouge_l_is_the_lcs_f_measure_with_and_without_stemming():
    answer = "the drugs lowered pressure"
    # stemmed: [the, drug, lower, pressur] vs [drug, lower, blood, pressur]: LCS 3, P = R = 3/4
    assert overlap.rouge_l(answer, "drug lowers blood pressure") == pytest.approx(0.75)
    # unstemmed only "pressure" is shared: LCS 1, P = R = 1/4
    assert overlap.rouge_l(answer, "drug lowers blood pressure", use_stemmer=False) == 0.25
    # order matters for ROUGE-L and not for token F1: LCS of [b, a] and [a, b] is 1
    assert overlap.rouge_l("beta alpha", "alpha beta") == pytest.approx(0.5)
    assert overlap.token_f1("beta alpha", "alpha beta") == 1.0


def sample(fmt, record, explanation=REFERENCE):
    return RewardSample(replace(record, explanation=explanation), fmt)


def test_the_rewards_score_the_free_text_answer_against_the_reference(pubmedqa_record):
    s = sample(FreeTextFormat(), pubmedqa_record)
    assert token_f1("Answer: the drug lowers blood pressure", s) == 1.0
    # [drug, raises, pressure] vs [drug, lowers, blood, pressure]: P = 2/3, R = 2/4, F1 = 4/7
    assert token_f1("The drug raises pressure.", s) == pytest.approx(4 / 7)
    # LCS [drug, pressur] of [drug, rais, pressur] and [the, drug, lower, blood, pressur]
    assert rouge_l("Drug raises pressure", s) == pytest.approx(
        2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5)
    )


def test_with_a_closed_format_the_rewards_score_its_explanation(pubmedqa_record):
    s = sample(XmlFormat(), pubmedqa_record)
    completion = "<answer>maybe</answer><explanation>The drug lowers blood pressure.</explanation>"
    assert token_f1(completion, s) == 1.0 and rouge_l(completion, s) == 1.0


@pytest.mark.parametrize("completion", ["", "   ", "Answer:"])
def test_an_unparsed_completion_scores_zero(pubmedqa_record, completion):
    s = sample(FreeTextFormat(), pubmedqa_record)
    assert token_f1(completion, s) == 0.0 and rouge_l(completion, s) == 0.0


@pytest.mark.parametrize("reward", [token_f1, rouge_l])
def test_a_record_without_a_reference_raises_naming_it(pubmedqa_record, reward):
    s = sample(FreeTextFormat(), pubmedqa_record, explanation=None)
    with pytest.raises(MissingReferenceError, match="record 'pqa'"):
        reward("Any answer.", s)


def test_the_free_text_reward_yaml_builds_and_the_reference_scores_its_maximum(pubmedqa_record):
    rewards = build_reward_set(
        {"token_f1": {"weight": 1.0}, "rouge_l": {"weight": 1.0, "use_stemmer": True}}
    )
    s = sample(FreeTextFormat(), pubmedqa_record)
    assert rewards.score(REFERENCE, s).total == 2.0
