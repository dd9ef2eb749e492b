"""Seed 002's reasoning-then-answer format: ``<reasoning>...</reasoning><answer>X</answer>``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from medrl.data.records import QARecord
from medrl.prompts._tags import parse_tagged_answer, tag_strings
from medrl.prompts._text import check_explanation_fields, join_labels, target_explanation
from medrl.prompts.base import OutputFormat, ParsedCompletion
from medrl.utils.config import defaults_from_config

_NAMES = ("reasoning", "answer")


@dataclass(frozen=True)
@defaults_from_config("format/tags")  # the defaults: conf/format/tags.yaml
class TagsFormat(OutputFormat):
    """Reasoning first, then the answer, each in its own tag.

    Parsing rules are those of `XmlFormat` with the order reversed: whitespace around the
    completion, between the elements and around the label is allowed; any other outside text,
    a repeated or nested tag, or the wrong order fails; ``format_ok`` needs a valid label and
    non-empty reasoning (returned as ``explanation``).

    case_sensitive:         ``<answer>a</answer>`` is rejected unless False (then -> "A").
    explanation_fallback:   SFT reasoning when a record has no explanation; ``{label}``,
                            ``{text}``.
    max_explanation_chars:  SFT reasoning is cut to this length on a word boundary.
    """

    name: ClassVar[str] = "tags"

    case_sensitive: bool
    explanation_fallback: str
    max_explanation_chars: int

    def __post_init__(self) -> None:
        check_explanation_fields(
            self.explanation_fallback, self.max_explanation_chars, tag_strings(_NAMES)
        )

    def system_prompt(self, labels: Sequence[str]) -> str:
        listed = join_labels(labels)  # first: it rejects an empty label list
        example = (
            "<reasoning>Brief step-by-step medical reasoning.</reasoning>"
            f"<answer>{labels[0]}</answer>"
        )
        return (
            "You are a medical expert answering exam questions. First reason briefly inside "
            "<reasoning></reasoning>, then give the single best answer "
            f"({listed}) inside <answer></answer>. Write nothing outside these "
            f"two tags.\nExample:\n{example}"
        )

    def render_target(self, record: QARecord) -> str:
        reasoning = target_explanation(
            record, self.explanation_fallback, self.max_explanation_chars, tag_strings(_NAMES)
        )
        return f"<reasoning>{reasoning}</reasoning><answer>{record.answer}</answer>"

    def parse(self, completion: str, labels: Sequence[str]) -> ParsedCompletion:
        return parse_tagged_answer(
            completion, labels, _NAMES, "answer", "reasoning", self.case_sensitive
        )
