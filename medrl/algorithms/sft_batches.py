"""SFT examples: prompt + target rendered with the chat template, tokenized, prompt masked.

The prompt is tokenized on its own, exactly as generation will see it, and the assistant part
(target + end-of-turn marker) after it; the loss mask is 1 only on the assistant tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medrl.data.records import QARecord
from medrl.prompts import build_messages, render_prompt
from medrl.prompts.base import OutputFormat
from medrl.rollout import encode_prompts


@dataclass(frozen=True)
class SFTExample:
    """One tokenized example. loss_mask[i] = 1 where input_ids[i] is an assistant token."""

    id: str
    input_ids: list[int]
    loss_mask: list[int]
    truncated: bool


def render_sft_text(
    tokenizer: Any,
    record: QARecord,
    output_format: OutputFormat,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """(prompt, assistant text). The assistant text ends with the end-of-turn marker.

    With a chat template the whole conversation is rendered and the assistant text is what
    follows the generation prompt, so it carries the template's own end-of-turn token
    (`<|im_end|>` for Qwen3 and SmolLM2); trailing newlines after it are not trained on.
    Without one (or if the template does not extend the prompt) the tokenizer's eos is appended.
    """
    messages = build_messages(record, output_format)
    prompt = render_prompt(tokenizer, messages, chat_template_kwargs)
    target = output_format.render_target(record)
    if getattr(tokenizer, "chat_template", None):
        conversation = [*messages, {"role": "assistant", "content": target}]
        full = tokenizer.apply_chat_template(
            conversation, tokenize=False, **dict(chat_template_kwargs or {})
        )
        if full.startswith(prompt) and target in full[len(prompt) :]:
            return prompt, full[len(prompt) :].rstrip("\n")
    return prompt, target + (tokenizer.eos_token or "")


def encode_sft_example(
    tokenizer: Any,
    record: QARecord,
    output_format: OutputFormat,
    chat_template_kwargs: Mapping[str, Any] | None,
    max_seq_length: int,
) -> SFTExample:
    """Tokenize one example, cutting it to `max_seq_length` tokens (flagged as truncated)."""
    prompt, assistant = render_sft_text(tokenizer, record, output_format, chat_template_kwargs)
    prompt_ids = encode_prompts(tokenizer, [prompt])[0]  # exactly what generation will see
    assistant_ids = tokenizer(assistant, add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + assistant_ids)[:max_seq_length]
    loss_mask = ([0] * len(prompt_ids) + [1] * len(assistant_ids))[:max_seq_length]
    truncated = len(prompt_ids) + len(assistant_ids) > max_seq_length
    return SFTExample(record.id, input_ids, loss_mask, truncated)


def encode_sft_pool(
    tokenizer: Any,
    records: Sequence[QARecord],
    output_format: OutputFormat,
    chat_template_kwargs: Mapping[str, Any] | None,
    max_seq_length: int,
) -> tuple[list[SFTExample], dict[str, int]]:
    """Encode a pool. Examples cut so short that no assistant token is left are dropped.

    Returns the examples and counts: `examples`, `truncated` (cut but kept), `dropped`.
    """
    examples, truncated, dropped = [], 0, 0
    for record in records:
        example = encode_sft_example(
            tokenizer, record, output_format, chat_template_kwargs, max_seq_length
        )
        if not any(example.loss_mask):
            dropped += 1
            continue
        truncated += example.truncated
        examples.append(example)
    return examples, {"examples": len(examples), "truncated": truncated, "dropped": dropped}


@dataclass(frozen=True)
class SFTCollator:
    """Right-pads a list of SFTExamples into tensors: input_ids, attention_mask, loss_mask."""

    pad_token_id: int

    def __call__(self, examples: Sequence[SFTExample]) -> dict[str, torch.Tensor]:
        length = max(len(e.input_ids) for e in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id)  # [B, L]
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)  # [B, L]
        loss_mask = torch.zeros((len(examples), length), dtype=torch.long)  # [B, L]
        for row, example in enumerate(examples):
            n = len(example.input_ids)
            input_ids[row, :n] = torch.tensor(example.input_ids)
            attention_mask[row, :n] = 1
            loss_mask[row, :n] = torch.tensor(example.loss_mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}
