"""Chat messages for one record, and the prompt string a tokenizer turns them into.

Plain template (tokenizers without a chat template, e.g. base models)::

    System: <system prompt>

    User: <user message>

    Assistant:
    <completion starts here>

The prompt ends with a newline after ``Assistant:`` so that an SFT target appended to it starts
on a clean token boundary (a trailing space would become its own BPE token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from medrl.data.records import QARecord
from medrl.prompts._text import join_labels
from medrl.prompts.base import OutputFormat

Message = dict[str, str]


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer `render_prompt` uses."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def _is_label_only(record: QARecord) -> bool:
    """True when options carry no text beyond their labels (PubMedQA's yes / no / maybe)."""
    return all(
        text.strip().casefold() == label.casefold() for label, text in record.options.items()
    )


def render_user_message(record: QARecord, open_ended: bool = False) -> str:
    """The user turn: optional context, the question, then the options or the allowed answers.

    ``Context:\\n<context>`` comes first when the record has one (PubMedQA abstracts), so the
    question is read with its evidence; multiple choice options follow one per line as
    ``A. text``; records whose options are just their labels get ``Answer with yes, no or maybe.``
    `open_ended` (a free-text format) shows neither: the question is asked as an open one.
    """
    parts = []
    if record.context and record.context.strip():
        parts.append(f"Context:\n{record.context.strip()}")
    parts.append(f"Question: {record.question.strip()}")
    if not open_ended:
        parts.append(_answer_choices(record))
    return "\n\n".join(parts)


def _answer_choices(record: QARecord) -> str:
    if _is_label_only(record):
        return f"Answer with {join_labels(record.labels)}."
    return "\n".join(f"{label}. {text}" for label, text in record.options.items())


def build_messages(record: QARecord, fmt: OutputFormat) -> list[Message]:
    """``[system, user]`` messages asking for `record`'s answer in `fmt`."""
    return [
        {"role": "system", "content": fmt.system_prompt(record.labels)},
        {"role": "user", "content": render_user_message(record, fmt.open_ended)},
    ]


def render_plain(messages: Sequence[Mapping[str, str]]) -> str:
    """The documented plain template (module docstring) for tokenizers without a chat template."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join([*turns, "Assistant:\n"])


def render_prompt(
    tokenizer: ChatTokenizer,
    messages: Sequence[Mapping[str, str]],
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """The generation prompt for `messages`, ending where the assistant's reply begins.

    Uses the tokenizer's chat template when it has one, passing `chat_template_kwargs` through
    (``{"enable_thinking": False}`` for Qwen3); otherwise the plain template, which ignores them.
    """
    if not getattr(tokenizer, "chat_template", None):
        return render_plain(messages)
    prompt = tokenizer.apply_chat_template(
        list(messages),
        tokenize=False,
        add_generation_prompt=True,
        **dict(chat_template_kwargs or {}),
    )
    if not isinstance(prompt, str):
        raise TypeError(f"apply_chat_template returned {type(prompt).__name__}, expected str")
    return prompt
