"""The bare-label format: the completion is only the answer label (``B``, ``maybe``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from medrl.data.records import QARecord
from medrl.prompts._text import join_labels, match_label, preview
from medrl.prompts.base import OutputFormat, ParsedCompletion
from medrl.utils.config import defaults_from_config


@dataclass(frozen=True)
@defaults_from_config("format/letter")  # the defaults: conf/format/letter.yaml
class LetterFormat(OutputFormat):
    """Only the label, optionally followed by one of `allowed_suffixes` (``"B."``, ``"B)"``).

    Whitespace around the completion is allowed; anything else (``"(B)"``, ``"B. Because..."``,
    ``"Answer: B"``) fails. There is no explanation, so explanation rewards score 0.

    case_sensitive:    ``"b"`` is rejected unless False (then -> "B").
    allowed_suffixes:  single trailing characters tolerated after the label; models often
                       write "B." and the period carries no information.
    """

    name: ClassVar[str] = "letter"

    case_sensitive: bool
    allowed_suffixes: str

    def system_prompt(self, labels: Sequence[str]) -> str:
        listed = join_labels(labels)  # first: it rejects an empty label list
        return (
            "You are a medical expert answering exam questions. Reply with only the label of "
            f"the single best answer ({listed}): no explanation, no other text.\n"
            f"Example:\n{labels[0]}"
        )

    def render_target(self, record: QARecord) -> str:
        return record.answer

    def parse(self, completion: str, labels: Sequence[str]) -> ParsedCompletion:
        text = completion.strip()
        answer = match_label(text, labels, self.case_sensitive)
        # The exact text is tried first so a label that itself ends in "." still matches.
        if answer is None and text[-1:] and text[-1] in self.allowed_suffixes:
            answer = match_label(text[:-1], labels, self.case_sensitive)
        if answer is None:
            return ParsedCompletion(
                answer=None, format_ok=False, error=f"{preview(text)} is not one of {list(labels)}"
            )
        return ParsedCompletion(answer=answer, format_ok=True)
