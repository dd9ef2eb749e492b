"""The XML format of seed 000: ``<answer>X</answer><explanation>...</explanation>``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from medrl.data.records import QARecord
from medrl.prompts._tags import parse_tagged_answer, tag_strings
from medrl.prompts._text import check_explanation_fields, join_labels, target_explanation
from medrl.prompts.base import OutputFormat, ParsedCompletion
from medrl.utils.config import defaults_from_config

_NAMES = ("answer", "explanation")


@dataclass(frozen=True)
@defaults_from_config("format/xml")  # the defaults: conf/format/xml.yaml
class XmlFormat(OutputFormat):
    """Answer first, then a short explanation, each in its own tag.

    Parsing rules: whitespace around the completion, between the two elements and around the
    label inside ``<answer>`` is allowed; anything else outside the two elements, a repeated or
    nested tag, or the wrong order fails. ``format_ok`` needs a valid label and a non-empty
    explanation; ``answer`` is set when the structure holds and the label is valid.

    case_sensitive:         ``<answer>a</answer>`` is rejected unless False (then -> "A").
    explanation_fallback:   SFT explanation when a record has none; ``{label}``, ``{text}``.
    max_explanation_chars:  SFT explanations are cut to this length on a word boundary.
    """

    name: ClassVar[str] = "xml"

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
            f"<answer>{labels[0]}</answer><explanation>One or two sentences of medical "
            "reasoning.</explanation>"
        )
        return (
            "You are a medical expert answering exam questions. Choose the single best answer "
            f"({listed}). Reply with the answer inside <answer></answer> followed "
            "by a short explanation inside <explanation></explanation>, and nothing else.\n"
            f"Example:\n{example}"
        )

    def render_target(self, record: QARecord) -> str:
        explanation = target_explanation(
            record, self.explanation_fallback, self.max_explanation_chars, tag_strings(_NAMES)
        )
        return f"<answer>{record.answer}</answer><explanation>{explanation}</explanation>"

    def parse(self, completion: str, labels: Sequence[str]) -> ParsedCompletion:
        return parse_tagged_answer(
            completion, labels, _NAMES, "answer", "explanation", self.case_sensitive
        )
