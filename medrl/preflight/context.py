"""Prompts as the model will see them (check 8) and whether they fit its context (check 7).

Prompts are rendered and tokenized by the functions the stages use (`build_messages`,
`render_prompt`, `encode_prompts`, `encode_sft_pool`), so the token counts here are the ones
training and evaluation will produce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from medrl.algorithms.sft_batches import encode_sft_pool
from medrl.data.records import QARecord
from medrl.evaluation.choice import ChoiceSettings
from medrl.evaluation.choice_scoring import encode_item
from medrl.preflight.report import CheckResult, RenderedPrompt, failed, passed, warned
from medrl.prompts import build_messages, render_prompt, render_user_message
from medrl.prompts.base import OutputFormat
from medrl.prompts.messages import render_plain
from medrl.rollout import encode_prompts


@dataclass(frozen=True)
class Renderer:
    """Renders and counts prompts like the stages; without a tokenizer, the plain template."""

    output_format: OutputFormat
    tokenizer: Any | None
    chat_template_kwargs: Mapping[str, Any]

    def render(self, record: QARecord) -> str:
        messages = build_messages(record, self.output_format)
        if self.tokenizer is None:
            return render_plain(messages)
        return render_prompt(self.tokenizer, messages, self.chat_template_kwargs)

    def count(self, prompt: str) -> int | None:
        """Prompt tokens exactly as generation encodes them (BOS added where the model wants)."""
        return None if self.tokenizer is None else len(encode_prompts(self.tokenizer, [prompt])[0])

    def show(self, pool: str, record: QARecord) -> RenderedPrompt:
        text = self.render(record)
        template = "plain" if self.tokenizer is None else "chat"
        return RenderedPrompt(pool, record.id, text, self.count(text), template)


def sample_records(
    pools: Mapping[str, Sequence[QARecord]], names: Sequence[str], count: int
) -> list[tuple[str, QARecord]]:
    """Up to `count` (pool, record): the first record of each pool in use, then the second..."""
    rounds = zip_longest(*[[(name, r) for r in pools.get(name, [])[:count]] for name in names])
    picked = [item for round_ in rounds for item in round_ if item is not None]
    return picked[:count]


def longest_record(records: Sequence[QARecord]) -> QARecord:
    """The record with the longest user message: the system prompt is the same for a whole
    dataset, so this is (up to tokenization) the longest prompt, found without tokenizing all."""
    return max(records, key=lambda record: len(render_user_message(record)))


def check_generation_fits(
    stage: str,
    key: str,
    max_new_tokens: int,
    records: Sequence[QARecord],
    renderer: Renderer,
    window: int,
) -> CheckResult:
    """Prompt + max_new_tokens within the context, for the pool's first and longest prompt."""
    candidates = {record.id: record for record in (records[0], longest_record(records))}
    counted = [(renderer.count(renderer.render(r)) or 0, r.id) for r in candidates.values()]
    prompt_tokens, record_id = max(counted)
    total = prompt_tokens + max_new_tokens
    head = f"{key}={max_new_tokens}: the longest {stage} prompt (record {record_id}) has "
    if total <= window:
        return passed(
            "context", f"{head}{prompt_tokens} tokens; {total} <= the context of {window}", key
        )
    room = window - prompt_tokens
    fix = f"lower it to at most {room}" if room >= 1 else "the prompt alone fills the context"
    return failed(
        "context",
        f"{head}{prompt_tokens} tokens, and {prompt_tokens} + {max_new_tokens} = {total} exceeds "
        f"the model's context of {window} tokens (max_position_embeddings); {fix}",
        key,
    )


def check_choice_fits(
    records: Sequence[QARecord], renderer: Renderer, choice: ChoiceSettings, window: int
) -> CheckResult:
    """Forced choice (evaluation.mode=choice_logprob) generates nothing: each prompt + its
    longest option continuation, tokenized as the scoring does (`encode_item`), must fit the
    context. Checked on the pool's first record, its longest prompt and its longest option."""
    key = "evaluation.choice.continuation"
    longest_option = max(records, key=lambda r: max(len(text) for text in r.options.values()))
    candidates = {r.id: r for r in (records[0], longest_record(records), longest_option)}
    counted = []
    for record in candidates.values():
        item = encode_item(renderer.tokenizer, renderer.render(record), record, choice)
        longest = max(len(tokens) for tokens in item.tokens.values())
        counted.append((len(item.context) + longest, len(item.context), longest, record.id))
    total, context, continuation, record_id = max(counted)
    head = (
        f"{key}={choice.continuation}: the longest eval item (record {record_id}) scores "
        f"{context} context + {continuation} continuation tokens = {total}"
    )
    if total <= window:
        return passed("context", f"{head} <= the context of {window}", key)
    return failed(
        "context",
        f"{head}, more than the model's context of {window} tokens (max_position_embeddings); "
        "use continuation=label or shorter prompts (evaluation.limit, dataset.pools.eval)",
        key,
    )


def check_sft_lengths(
    records: Sequence[QARecord],
    renderer: Renderer,
    max_seq_length: int,
    window: int | None,
) -> list[CheckResult]:
    """Examples cut by sft.max_seq_length (a warning), none left (a failure), and examples
    longer than the context (a failure). Counts are `encode_sft_pool`'s, as the stage logs."""
    key = "sft.max_seq_length"
    examples, counts = encode_sft_pool(
        renderer.tokenizer,
        records,
        renderer.output_format,
        renderer.chat_template_kwargs,
        max_seq_length,
    )
    head = f"{key}={max_seq_length}: of {len(records)} SFT examples"
    cut = (
        f"{counts['truncated']} are cut (answer tokens lost) and {counts['dropped']} dropped "
        "(the prompt alone fills it)"
    )
    if not examples:
        results = [failed("context", f"{head}, none keeps an answer token; raise it", key)]
    elif counts["truncated"] or counts["dropped"]:
        results = [warned("context", f"{head}, {cut}", key)]
    else:
        results = [passed("context", f"{head}, none is cut", key)]
    longest = max((len(example.input_ids) for example in examples), default=0)
    if window is not None and longest > window:
        results.append(
            failed(
                "context",
                f"{key}={max_seq_length}: the longest SFT example keeps {longest} tokens, more "
                f"than the model's context of {window} (max_position_embeddings); set "
                f"{key} <= {window}",
                key,
            )
        )
    return results
