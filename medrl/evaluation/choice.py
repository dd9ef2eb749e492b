"""Forced-choice evaluation (evaluation.mode=choice_logprob): its settings and its pure math.

Each option of an item is scored by the log-likelihood of its continuation after the item's
prompt; the answer is the option with the highest score. This is how EleutherAI's
lm-evaluation-harness (lm-eval) scores `output_type: multiple_choice` tasks, and published
medical-QA numbers are computed with it. What medrl copies, from lm-eval 0.4.13:

* requests (lm_eval/api/task.py, ConfigurableTask.construct_requests): one per option,
  (context, target_delimiter + choice); on lm-eval's chat-template path target_delimiter is ""
  (medrl's prompts are chat-rendered, hence evaluation.choice.delimiter: "").
* tokens (lm_eval/api/model.py, TemplateLM._encode_pair): whitespace that ends the context
  moves to the start of the continuation (`split_trailing_whitespace`); a causal model's
  continuation tokens are encode(context + continuation)[len(encode(context)):]
  (medrl.evaluation.choice_scoring.encode_pair).
* score (lm_eval/models/huggingface.py, HFLM._loglikelihood_tokens): the sum over the
  continuation's tokens of log softmax(logits)[token] (`sum_logprobs`).
* answers (ConfigurableTask.process_results): acc takes argmax_i ll_i; acc_norm takes
  argmax_i ll_i / len(choice_i) with len counting the choice's characters (Python len; the
  delimiter and the moved whitespace not counted); acc_bytes the same with UTF-8 bytes
  (`length_normalized`). numpy.argmax returns the first maximum (`pick`).

So lm-eval's acc_norm is per character, not per byte as often said; the two agree on ASCII
options. medrl reports both accuracies: `accuracy` (raw, the headline and the paired tests) and
`accuracy_norm` (evaluation.choice.length_unit: chars = acc_norm, bytes = acc_bytes).

Pure functions: no model, no I/O. The model side is medrl.evaluation.choice_scoring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from medrl.data.records import QARecord
from medrl.utils.config import defaults_from_config
from medrl.utils.settings import SettingsBlock, bool_rule, choice_rule

MODES = ("generate", "choice_logprob")
CHOICE_MODE = "choice_logprob"
CONTINUATIONS = ("label", "option_text")
LENGTH_UNITS = ("chars", "bytes")


@dataclass(frozen=True)
@defaults_from_config("evaluation/default", "choice")
class ChoiceSettings(SettingsBlock):
    """evaluation.choice (conf/evaluation/default.yaml holds the defaults and says what each key
    means): what each option's continuation is, what separates it from the prompt, the unit
    of accuracy_norm's length, and whether an item's options share one prompt forward."""

    BLOCK = "choice"
    PARENT = "evaluation"
    RULES = (
        ("continuation", *choice_rule(CONTINUATIONS)),
        ("delimiter", lambda v: isinstance(v, str), 'must be a string ("" for none)'),
        ("length_unit", *choice_rule(LENGTH_UNITS)),
        ("share_prompt", *bool_rule()),
    )

    continuation: str
    delimiter: str
    length_unit: str
    share_prompt: bool


def option_continuations(record: QARecord, kind: str) -> dict[str, str]:
    """{label: the text scored after the prompt for that option}, the delimiter not included,
    in presentation order: the label itself (kind="label": "B", "yes") or the option's text
    (kind="option_text"). An empty text has no tokens to score: ValueError naming the record."""
    if kind not in CONTINUATIONS:
        raise ValueError(f"evaluation.choice.continuation={kind!r}: must be one of {CONTINUATIONS}")
    texts = {label: label if kind == "label" else text for label, text in record.options.items()}
    empty = [label for label, text in texts.items() if not text]
    if empty:
        raise ValueError(
            f"record {record.id!r}: options {empty} have no text to score with "
            f"evaluation.choice.continuation={kind}; use continuation=label"
        )
    return texts


def split_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's first step of _encode_pair: the whitespace that ends `context` moves to the
    front of `continuation` ("...assistant\\n", "B" -> "...assistant", "\\nB"), so a
    tokenizer that merges a space or newline into the next word sees it with that word.
    context + continuation is unchanged."""
    kept = context.rstrip()
    return kept, context[len(kept) :] + continuation


def text_length(text: str, unit: str) -> int:
    """The length accuracy_norm divides by: characters (unit="chars", lm-eval's acc_norm:
    Python's len) or UTF-8 bytes (unit="bytes", lm-eval's acc_bytes). "é" is 1 char, 2 bytes."""
    if unit == "chars":
        return len(text)
    if unit == "bytes":
        return len(text.encode("utf-8"))
    raise ValueError(f"evaluation.choice.length_unit={unit!r}: must be one of {LENGTH_UNITS}")


def sum_logprobs(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of each row's continuation: ll_n = sum_t mask[n, t] * logp[n, t], where
    logp[n, t] = log p(token t | prompt, tokens < t). logp, mask: [N, C] -> [N] float64
    (summed in float64 so the sum adds no rounding of its own)."""
    if logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and mask {tuple(mask.shape)} differ")
    return (logp.double() * mask.double()).sum(dim=-1)  # [N]


def length_normalized(loglik: Sequence[float], lengths: Sequence[int]) -> list[float]:
    """ll_i / length_i per option (lm-eval's acc_norm score). A length must be >= 1: an empty
    continuation has no per-unit score."""
    if len(loglik) != len(lengths):
        raise ValueError(f"{len(loglik)} log-likelihoods but {len(lengths)} lengths")
    if any(length < 1 for length in lengths):
        raise ValueError(f"continuation lengths must be >= 1, got {list(lengths)}")
    return [value / length for value, length in zip(loglik, lengths, strict=True)]


def pick(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the first (lowest index, i.e. the option shown
    first), as numpy.argmax does in lm-eval. A nan score is an error, not a silent loser."""
    if not scores:
        raise ValueError("no option scores to pick from")
    if any(math.isnan(score) for score in scores):
        raise ValueError(f"an option's score is nan: {list(scores)}")
    best = 0
    for index, score in enumerate(scores):
        if score > scores[best]:
            best = index
    return best


@dataclass(frozen=True)
class ChoiceOutcome:
    """One item's forced choice: the raw answer (argmax of the sums) and the normalized one
    (argmax of sum / length), as labels."""

    answer: str
    answer_norm: str


def choose(
    labels: Sequence[str], loglik: Mapping[str, float], lengths: Mapping[str, int]
) -> ChoiceOutcome:
    """The raw and length-normalized answers among `labels` (presentation order, which breaks
    ties) from each option's log-likelihood and continuation length."""
    raw = [loglik[label] for label in labels]
    norm = length_normalized(raw, [lengths[label] for label in labels])
    return ChoiceOutcome(answer=labels[pick(raw)], answer_norm=labels[pick(norm)])
