"""Forced-choice predictions (evaluation.mode=choice_logprob): every option of every item scored
by the model in padded forward passes, nothing generated.

Per item: the prompt generation would continue (`eval_prompts`), each option's continuation
(evaluation.choice: delimiter + the label or the option's text), tokenized as lm-eval's HFLM
does (`encode_pairs`), the summed token log-probs of each continuation (`score_items`, through
medrl.rollout.completion_logprobs: float32 log-softmax at the target ids), then the raw and
length-normalized answers (medrl.evaluation.choice.choose). The math is in
medrl.evaluation.choice; lm-eval's source for each step is cited there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrl.data.records import QARecord
from medrl.evaluation.choice import (
    ChoiceSettings,
    choose,
    option_continuations,
    split_trailing_whitespace,
    sum_logprobs,
    text_length,
)
from medrl.evaluation.predictions import (
    Prediction,
    check_batching,
    eval_prompts,
    length_batches,
    progress_bar,
)
from medrl.prompts import OutputFormat
from medrl.rollout import completion_logprobs, encode_prompts, eval_mode, left_pad


@dataclass(frozen=True)
class EncodedItem:
    """One item ready to score: the context's tokens (the prompt, its trailing whitespace
    moved out) and, per label in presentation order, the continuation (the label or option
    text: what accuracy_norm's length counts, lm-eval's choice), the scored text (delimiter +
    continuation, lm-eval's request) and its tokens (the moved whitespace included)."""

    context: list[int]
    continuations: dict[str, str]
    texts: dict[str, str]
    tokens: dict[str, list[int]]


def encode_pairs(
    tokenizer: Any, context: str, continuations: Sequence[str]
) -> tuple[list[int], list[list[int]]]:
    """(context tokens, each continuation's tokens) as lm-eval's TemplateLM._encode_pair gives
    them for a causal model: the context's trailing whitespace moves to the continuation, then
    continuation tokens = encode(context + continuation)[len(encode(context)):] (encoded whole,
    so a merge across the boundary is tokenized as it would be in running text). Encoding is
    `encode_prompts`' (special tokens as the prompt writes them, a BOS where the model adds one).
    An empty context or a continuation with no tokens of its own raises ValueError."""
    kept, _ = split_trailing_whitespace(context, "")
    if not kept:
        raise ValueError("forced choice needs a prompt that is not only whitespace")
    joined = [kept + split_trailing_whitespace(context, text)[1] for text in continuations]
    context_ids, *wholes = encode_prompts(tokenizer, [kept, *joined])
    split = [whole[len(context_ids) :] for whole in wholes]
    for text, ids in zip(continuations, split, strict=True):
        if not ids:
            raise ValueError(f"continuation {text!r} encodes to no tokens after the prompt")
    return context_ids, split


def encode_item(
    tokenizer: Any, prompt: str, record: QARecord, settings: ChoiceSettings
) -> EncodedItem:
    """The EncodedItem of `record` after its rendered `prompt`, options in presentation order."""
    continuations = option_continuations(record, settings.continuation)
    texts = {label: settings.delimiter + text for label, text in continuations.items()}
    context, tokens = encode_pairs(tokenizer, prompt, list(texts.values()))
    return EncodedItem(context, continuations, texts, dict(zip(texts, tokens, strict=True)))


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, C], mask [N, C]) with every sequence left-aligned, C = the longest length."""
    width = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [N, C]
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [N, C]
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def score_items(
    model: nn.Module, items: Sequence[EncodedItem], pad_id: int, share_prompt: bool = True
) -> list[dict[str, float]]:
    """{label: log-likelihood of its continuation} per item: one row per (item, option), the
    contexts left-padded and the continuations right-padded into one batch, scored by
    `completion_logprobs` (float32 log-softmax; positions count real tokens only, so padding
    changes nothing) and summed by `sum_logprobs`. share_prompt: an item's options share one
    forward of its context (evaluation.choice.share_prompt; speed only)."""
    rows = [(i, label) for i, item in enumerate(items) for label in item.tokens]
    prompt_ids, prompt_mask = left_pad([items[i].context for i, _ in rows], pad_id)  # [N, P]
    completion_ids, completion_mask = right_pad(
        [items[i].tokens[label] for i, label in rows], pad_id
    )  # [N, C]
    groups = [i for i, _ in rows] if share_prompt else None
    with torch.no_grad(), eval_mode(model):
        logp = completion_logprobs(
            model, prompt_ids, prompt_mask, completion_ids, completion_mask, prompt_groups=groups
        )  # [N, C]
    sums = sum_logprobs(logp.cpu(), completion_mask).tolist()  # [N]
    scores: list[dict[str, float]] = [{} for _ in items]
    for (i, label), value in zip(rows, sums, strict=True):
        scores[i][label] = value
    return scores


def make_choice_prediction(
    record: QARecord,
    prompt: str,
    item: EncodedItem,
    loglik: Mapping[str, float],
    length_unit: str,
) -> Prediction:
    """The forced choice on `record` as a Prediction: `answer` the raw argmax (the headline),
    `answer_norm` the argmax per unit of length, every option's log-likelihood and length kept.
    There is nothing to parse: format_ok is True (the answer is always a label), the JSON flags
    False (as for every format but json), no truncation; `completion` is the chosen text."""
    labels = list(item.texts)
    lengths = {label: text_length(text, length_unit) for label, text in item.continuations.items()}
    outcome = choose(labels, loglik, lengths)
    return Prediction(
        id=record.id,
        prompt=prompt,
        completion=item.texts[outcome.answer],
        answer=outcome.answer,
        gold=record.answer,
        correct=outcome.answer == record.answer,
        format_ok=True,
        json_valid=False,
        schema_ok=False,
        num_tokens=len(item.tokens[outcome.answer]),
        truncated=False,
        subject=record.subject,
        source=record.source or None,
        option_logprobs={label: float(loglik[label]) for label in labels},
        option_lengths=lengths,
        answer_norm=outcome.answer_norm,
        correct_norm=outcome.answer_norm == record.answer,
    )


def predict_choices(
    policy_model: nn.Module,
    tokenizer: Any,
    records: Iterable[QARecord],
    output_format: OutputFormat,
    chat_template_kwargs: Mapping[str, Any] | None,
    settings: ChoiceSettings,
    batch_size: int = 8,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> list[Prediction]:
    """One forced-choice Prediction per record, in the order of `records`.

    Prompts are exactly generation's (`eval_prompts`); batches of `batch_size` items are formed
    as `predict` forms them (sorted by prompt length), each scored in one padded pass over all
    its options (`score_items`). shard=(rank, world_size): only batches rank, rank +
    world_size, ... (`merge_shards` puts the shards of all ranks back together)."""
    check_batching(batch_size, shard)
    rank, world_size = shard
    records = list(records)
    if not records:
        return []
    prompts = eval_prompts(tokenizer, records, output_format, chat_template_kwargs)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mine = list(enumerate(length_batches(tokenizer, prompts, batch_size)))[rank::world_size]
    found: dict[int, Prediction] = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("scoring options", total=len(mine))
        for _, batch in mine:
            items = [encode_item(tokenizer, prompts[i], records[i], settings) for i in batch]
            scores = score_items(policy_model, items, pad_id, settings.share_prompt)
            for index, item, loglik in zip(batch, items, scores, strict=True):
                found[index] = make_choice_prediction(
                    records[index], prompts[index], item, loglik, settings.length_unit
                )
            bar.advance(task)
    return [found[i] for i in sorted(found)]
