"""Forced choice's pure math (medrl/evaluation/choice.py), on hand-computed values: the
continuation texts, lm-eval's whitespace move, lengths, sums, normalization and the tie rule;
and the settings that choose them."""

from __future__ import annotations

import math

import pytest
import torch

from medrl.data.records import QARecord
from medrl.evaluation.choice import (
    ChoiceSettings,
    choose,
    length_normalized,
    option_continuations,
    pick,
    split_trailing_whitespace,
    sum_logprobs,
    text_length,
)
from medrl.evaluation.settings import evaluation_problems, mode_problem
from medrl.prompts import FreeTextFormat, LetterFormat
from medrl.utils.settings import SettingsError

MCQ = QARecord(
    id="q1",
    question="Which nerve?",
    options={"A": "Facial", "B": "Trigeminal", "C": "Vagus", "D": "Optic"},
    answer="B",
)
EVALUATION = dict(include_base=True, batch_size=16, limit=None, num_samples=1)


# --- what is scored -------------------------------------------------------------------------


def test_the_continuation_is_the_label_or_the_options_text_in_presentation_order():
    assert option_continuations(MCQ, "label") == {"A": "A", "B": "B", "C": "C", "D": "D"}
    assert list(option_continuations(MCQ, "option_text").values()) == [
        "Facial",
        "Trigeminal",
        "Vagus",
        "Optic",
    ]


def test_an_option_without_text_cannot_be_scored_by_its_text():
    blank = QARecord(id="q2", question="?", options={"A": "x", "B": ""}, answer="A")
    with pytest.raises(ValueError, match="q2.*'B'.*continuation=option_text; use continuation"):
        option_continuations(blank, "option_text")
    assert option_continuations(blank, "label") == {"A": "A", "B": "B"}


def test_trailing_whitespace_of_the_prompt_moves_to_the_continuation_as_lm_eval_does():
    assert split_trailing_whitespace("<|im_start|>assistant\n", "B") == (
        "<|im_start|>assistant",
        "\nB",
    )
    assert split_trailing_whitespace("Answer: \n\n", " yes") == ("Answer:", " \n\n yes")
    assert split_trailing_whitespace("Answer:", "B") == ("Answer:", "B")  # nothing to move


def test_lengths_count_characters_or_utf8_bytes():
    # lm-eval's acc_norm divides by len(choice) (characters), acc_bytes by its UTF-8 bytes.
    assert text_length("maybe", "chars") == text_length("maybe", "bytes") == 5
    assert text_length("Ménière", "chars") == 7
    assert text_length("Ménière", "bytes") == 9  # é and è are two bytes each
    with pytest.raises(ValueError, match="length_unit='tokens'"):
        text_length("x", "tokens")


# --- the score and the choice -------------------------------------------------------------


def test_the_sum_covers_the_continuation_tokens_only():
    logp = torch.tensor([[-0.5, -1.25, -9.0], [-2.0, -7.0, -7.0]])  # [N=2, C=3]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # row 0: two tokens, row 1: one
    assert sum_logprobs(logp, mask).tolist() == [-1.75, -2.0]
    with pytest.raises(ValueError, match="differ"):
        sum_logprobs(logp, mask[:, :2])


def test_normalization_divides_each_sum_by_its_length():
    assert length_normalized([-2.0, -3.0, -2.5], [3, 2, 5]) == pytest.approx([-2 / 3, -1.5, -0.5])
    with pytest.raises(ValueError, match=">= 1"):
        length_normalized([-1.0], [0])
    with pytest.raises(ValueError, match="1 log-likelihoods but 2 lengths"):
        length_normalized([-1.0], [1, 2])


def test_ties_go_to_the_first_option_as_numpy_argmax_does():
    assert pick([-1.0, -0.5, -0.5]) == 1
    assert pick([-3.0, -3.0]) == 0
    assert pick([-math.inf, -2.0]) == 1
    with pytest.raises(ValueError, match="nan"):
        pick([-1.0, math.nan])
    with pytest.raises(ValueError, match="no option"):
        pick([])


def test_raw_and_length_normalized_answers_differ_when_a_long_option_is_likely_per_character():
    # PubMedQA's labels: "yes" (3 chars) has the highest sum, -2.0 (-0.667 per char), but
    # "maybe" (5 chars) has the highest per character: -2.5 / 5 = -0.5. "no": -3.0 / 2 = -1.5.
    loglik = {"yes": -2.0, "no": -3.0, "maybe": -2.5}
    lengths = {"yes": 3, "no": 2, "maybe": 5}
    outcome = choose(["yes", "no", "maybe"], loglik, lengths)
    assert (outcome.answer, outcome.answer_norm) == ("yes", "maybe")


def test_one_character_labels_make_the_normalized_answer_the_raw_one():
    loglik = {"A": -1.5, "B": -0.75, "C": -0.75, "D": -4.0}
    outcome = choose(["A", "B", "C", "D"], loglik, dict.fromkeys("ABCD", 1))
    assert (outcome.answer, outcome.answer_norm) == ("B", "B")  # tie B / C: B, shown first


# --- settings -----------------------------------------------------------------------------


def test_the_choice_settings_default_to_the_yaml_and_name_a_bad_key():
    settings = ChoiceSettings()
    assert (settings.continuation, settings.delimiter, settings.length_unit) == (
        "label",
        "",
        "chars",
    )
    assert settings.share_prompt is True
    with pytest.raises(SettingsError, match=r"evaluation\.choice\.length_unit=tokens: must be"):
        ChoiceSettings.from_values({"length_unit": "tokens"})


def test_evaluation_problems_check_the_mode_and_the_choice_block():
    assert evaluation_problems(EVALUATION) == []  # mode absent: the yaml's (generate)
    assert evaluation_problems(dict(EVALUATION, mode="choice_logprob")) == []
    (mode,) = evaluation_problems(dict(EVALUATION, mode="loglik"))
    assert mode.message("evaluation.") == (
        "evaluation.mode=loglik: must be one of ['generate', 'choice_logprob']"
    )
    (unit,) = evaluation_problems(dict(EVALUATION, choice={"continuation": "text"}))
    assert unit.message("evaluation.").startswith("evaluation.choice.continuation=text: must be")


def test_forced_choice_scores_each_item_once():
    sampled = dict(EVALUATION, mode="choice_logprob", num_samples=3, sampling={"greedy": False})
    (problem,) = evaluation_problems(sampled)
    assert problem.message("evaluation.") == (
        "evaluation.num_samples=3: needs evaluation.num_samples=1 with "
        "evaluation.mode=choice_logprob (forced choice scores every option once: there is "
        "nothing to sample)"
    )


def test_forced_choice_refuses_open_ended_formats_naming_evaluation_mode():
    assert mode_problem("choice_logprob", LetterFormat()) is None
    assert mode_problem("generate", FreeTextFormat()) is None
    message = mode_problem("choice_logprob", FreeTextFormat())
    assert message.startswith("evaluation.mode=choice_logprob scores answer options, and ")
    assert "format=free_text is open-ended" in message and "evaluation.mode=generate" in message
