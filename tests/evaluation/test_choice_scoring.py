"""Forced choice with a model (medrl/evaluation/choice_scoring.py): a bigram stub whose
log-probabilities are written by hand, then the tiny Qwen3 against a direct forward pass."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medrl.data.records import QARecord
from medrl.evaluation import Prediction, read_predictions, write_predictions
from medrl.evaluation.choice import ChoiceSettings
from medrl.evaluation.choice_scoring import (
    EncodedItem,
    encode_pairs,
    make_choice_prediction,
    predict_choices,
    score_items,
)
from medrl.prompts import LetterFormat, build_messages, render_prompt

LN2 = math.log(2.0)


class BigramLM(nn.Module):
    """A causal LM whose next-token log-probabilities depend only on the current token:
    logits[t] = table[input_ids[t]]. Each row is a normalized log-distribution, so
    log_softmax(logits[t]) is that row exactly. It keeps no cache (the shared-prompt path then
    runs every row in full, the same numbers)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids, logits_to_keep=0, **_):
        logits = self.table[input_ids]  # [N, L, V]
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, cache=None)


def bigram() -> BigramLM:
    """4 tokens. After token 1: p = (1/8, 1/8, 1/2, 1/4); after 0, 2 or 3: uniform (1/4)."""
    table = torch.full((4, 4), math.log(0.25))
    table[1] = torch.tensor([1 / 8, 1 / 8, 1 / 2, 1 / 4]).log()
    return BigramLM(table)


def item(context: list[int], a: list[int], b: list[int], text_b: str) -> EncodedItem:
    return EncodedItem(
        context=context,
        continuations={"A": "A", "B": text_b},
        texts={"A": "A", "B": text_b},
        tokens={"A": a, "B": b},
    )


RECORD = QARecord(id="r1", question="?", options={"A": "short", "B": "longer"}, answer="B")


# --- hand-computed: the bigram stub -------------------------------------------------------


@pytest.mark.parametrize("share_prompt", [False, True])
def test_each_option_scores_the_sum_of_its_token_log_probs(share_prompt):
    # Item 1, context [0, 1]: A = [2] -> log p(2|1) = log 1/2 = -ln 2;
    #                         B = [3, 2] -> log p(3|1) + log p(2|3) = log 1/4 + log 1/4 = -4 ln 2.
    # Item 2, context [2] (left-padded in the batch): A = [1] -> log 1/4 = -2 ln 2;
    #                         B = [1, 2] -> log p(1|2) + log p(2|1) = -2 ln 2 - ln 2 = -3 ln 2.
    items = [item([0, 1], [2], [3, 2], "BBBBBBBB"), item([2], [1], [1, 2], "B")]
    scores = score_items(bigram(), items, pad_id=0, share_prompt=share_prompt)
    assert scores[0] == pytest.approx({"A": -LN2, "B": -4 * LN2}, abs=1e-6)
    assert scores[1] == pytest.approx({"A": -2 * LN2, "B": -3 * LN2}, abs=1e-6)


def test_the_raw_and_the_length_normalized_choice_can_differ():
    # A: -ln 2 over 1 character = -0.693; B: -4 ln 2 over 8 characters = -0.347 per character.
    encoded = item([0, 1], [2], [3, 2], "BBBBBBBB")
    [loglik] = score_items(bigram(), [encoded], pad_id=0, share_prompt=False)
    prediction = make_choice_prediction(RECORD, "prompt", encoded, loglik, "chars")
    assert (prediction.answer, prediction.answer_norm) == ("A", "B")
    assert (prediction.correct, prediction.correct_norm) == (False, True)  # gold: B
    assert prediction.option_lengths == {"A": 1, "B": 8}
    assert prediction.option_logprobs == pytest.approx({"A": -LN2, "B": -4 * LN2}, abs=1e-6)
    assert (prediction.completion, prediction.num_tokens) == ("A", 1)
    assert prediction.format_ok and not prediction.truncated


def test_forced_choice_predictions_round_trip_and_old_files_still_load(tmp_path):
    encoded = item([0, 1], [2], [3, 2], "BBBBBBBB")
    [loglik] = score_items(bigram(), [encoded], pad_id=0)
    prediction = make_choice_prediction(RECORD, "prompt", encoded, loglik, "chars")
    write_predictions(tmp_path / "p.jsonl", [prediction])
    assert read_predictions(tmp_path / "p.jsonl") == [prediction]
    old = prediction.to_json()
    for key in ("option_logprobs", "option_lengths", "answer_norm", "correct_norm"):
        del old[key]  # a predictions file written before forced choice existed
    assert Prediction.from_json(old).option_logprobs is None


# --- the real tokenizer: lm-eval's split ----------------------------------------------------


def qwen_prompt(tokenizer, record: QARecord) -> str:
    messages = build_messages(record, LetterFormat())
    return render_prompt(tokenizer, messages, {"enable_thinking": False})


def test_the_prompts_trailing_newlines_are_scored_with_each_continuation(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    prompt = qwen_prompt(tokenizer, RECORD)
    assert prompt.endswith("</think>\n\n")  # Qwen3 without thinking
    context, [a, b] = encode_pairs(tokenizer, prompt, ["A", " B"])
    newline = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    assert context == tokenizer(prompt.rstrip(), add_special_tokens=False)["input_ids"]
    assert a == newline + tokenizer("A", add_special_tokens=False)["input_ids"]
    assert b == newline + tokenizer(" B", add_special_tokens=False)["input_ids"]


# --- the tiny Qwen3 against a direct forward --------------------------------------------------


def direct_loglik(model, tokenizer, prompt: str, continuation: str) -> float:
    """sum_t log p(token_t | tokens_<t) over the continuation's tokens, from one unpadded
    forward of the whole text, split as lm-eval splits it."""
    context = prompt.rstrip()
    whole = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float()  # [L, V]
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, whole[t]]) for t in range(start, len(whole)))


RECORDS = [
    QARecord(
        id="m1",
        question="Which nerve supplies tensor veli palatini?",
        options={"A": "Facial", "B": "Trigeminal", "C": "Glossopharyngeal", "D": "Vagus"},
        answer="B",
    ),
    QARecord(id="p1", question="Is it?", options={"yes": "yes", "no": "no"}, answer="no"),
]


@pytest.mark.parametrize(
    "settings",
    [
        ChoiceSettings(),
        ChoiceSettings(continuation="option_text", delimiter=" ", share_prompt=False),
    ],
    ids=["label", "option_text"],
)
def test_predict_choices_matches_a_direct_forward_on_tiny_qwen3(tiny_policy, settings):
    model, tokenizer = tiny_policy.model, tiny_policy.tokenizer
    kwargs = {"enable_thinking": False}
    predictions = predict_choices(model, tokenizer, RECORDS, LetterFormat(), kwargs, settings, 2)
    assert [p.id for p in predictions] == ["m1", "p1"]
    for record, prediction in zip(RECORDS, predictions, strict=True):
        prompt = qwen_prompt(tokenizer, record)
        assert prediction.prompt == prompt, "exactly generation's prompt"
        for label, text in record.options.items():
            scored = settings.delimiter + (label if settings.continuation == "label" else text)
            expected = direct_loglik(model, tokenizer, prompt, scored)
            assert prediction.option_logprobs[label] == pytest.approx(expected, abs=1e-4)
        loglik = prediction.option_logprobs
        assert prediction.answer == max(loglik, key=loglik.get)
        per_char = {k: v / prediction.option_lengths[k] for k, v in loglik.items()}
        assert prediction.answer_norm == max(per_char, key=per_char.get)


def test_sharing_the_prompt_forward_changes_no_score(tiny_policy):
    model, tokenizer = tiny_policy.model, tiny_policy.tokenizer
    kwargs = {"enable_thinking": False}
    runs = [
        predict_choices(model, tokenizer, RECORDS, LetterFormat(), kwargs, settings, 2)
        for settings in (ChoiceSettings(share_prompt=True), ChoiceSettings(share_prompt=False))
    ]
    for shared, full in zip(*runs, strict=True):
        assert shared.option_logprobs == pytest.approx(full.option_logprobs, abs=1e-5)
