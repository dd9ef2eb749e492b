"""The open-ended format: the answer is a short prose text, scored against a reference text.

Delimiting and parsing: the answer is the whole completion, from the first generated token to
the end-of-sequence token (or to max_new_tokens, which the rollout and evaluation flag as
truncated). Whitespace around it is removed, and so is one leading ``answer_prefix`` (``Answer:``
by default, any case), which chat models often write although the prompt does not ask for it.
Whitespace runs inside are kept as they are: the text metrics tokenize for themselves. An empty
answer fails to parse. There is no answer label: the completion is scored by text overlap with
the record's reference (``QARecord.explanation``: PubMedQA's long answer, MedMCQA's ``exp``,
BioASQ's ideal answer), not by accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from medrl.data.records import QARecord
from medrl.prompts._text import truncate_words
from medrl.prompts.base import OutputFormat, ParsedCompletion
from medrl.utils.config import defaults_from_config


class MissingReferenceError(ValueError):
    """An open-ended format met a record without a reference answer to train or score on."""


def reference_text(record: QARecord) -> str:
    """The record's reference answer (stripped), or MissingReferenceError naming the record."""
    text = (record.explanation or "").strip()
    if not text:
        raise MissingReferenceError(
            f"record {record.id!r} ({record.source or 'unknown source'}) has no reference "
            "answer (its explanation is empty); open-ended formats and text rewards need one: "
            "use a dataset that carries them (dataset=pubmedqa: long_answer; MedMCQA's `exp` "
            "from the hub), or a closed format"
        )
    return text


@dataclass(frozen=True)
@defaults_from_config("format/free_text")  # the defaults: conf/format/free_text.yaml
class FreeTextFormat(OutputFormat):
    """A prose answer of a few sentences, no tags, no answer label.

    answer_prefix:         one leading prefix the parser drops (case-insensitive); "" keeps all.
    max_reference_chars:   SFT targets (the reference) are cut to this length on a word boundary.
    """

    name: ClassVar[str] = "free_text"
    open_ended: ClassVar[bool] = True

    answer_prefix: str
    max_reference_chars: int

    def __post_init__(self) -> None:
        if self.max_reference_chars < 1:
            raise ValueError(f"max_reference_chars must be >= 1, got {self.max_reference_chars}")

    def system_prompt(self, labels: Sequence[str]) -> str:
        return (
            "You are a medical expert. Answer the question in one to three sentences of plain "
            "prose, stating the conclusion first, with no tags, lists or headings."
        )

    def render_target(self, record: QARecord) -> str:
        return truncate_words(reference_text(record), self.max_reference_chars)

    def parse(self, completion: str, labels: Sequence[str]) -> ParsedCompletion:
        text = completion.strip()
        prefix = self.answer_prefix
        if prefix and text[: len(prefix)].casefold() == prefix.casefold():
            text = text[len(prefix) :].strip()
        if not text:
            return ParsedCompletion(answer=None, format_ok=False, error="empty answer")
        return ParsedCompletion(answer=None, format_ok=True, explanation=text)
