"""The contract every output format implements: a system prompt, an SFT target, a strict parser.

A format is the single source of truth for what a well-formed answer looks like: the prompt that
asks for it, the target SFT trains on, and the parser that rewards and evaluation use. Keeping
the three together means a format cannot drift from its own parser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from medrl.data.records import QARecord


@dataclass(frozen=True)
class ParsedCompletion:
    """What a strict parser read from one model completion. Parsers never raise on model output.

    answer:       a valid answer label, or None when the strict parse found none.
    format_ok:    the completion follows the output format exactly (what `format` rewards).
    explanation:  the free-text part (explanation / reason / reasoning) when present.
    error:        why the strict parse failed, for logs and tests; None when format_ok.
    json_valid:   json format only: the whole completion is valid JSON (seed 001's R_json).
    schema_ok:    json format only: the seed 001 schema holds (category, confidence, reason).
    """

    answer: str | None
    format_ok: bool
    explanation: str | None = None
    error: str | None = None
    json_valid: bool = False
    schema_ok: bool = False


class OutputFormat(ABC):
    """One output format. Subclasses are small frozen dataclasses configured from conf/format/."""

    name: str
    # Open-ended formats (free_text) have no answer label: the prompt shows no options, and the
    # completion is scored against the record's reference text instead of by accuracy.
    open_ended: bool = False

    @abstractmethod
    def system_prompt(self, labels: Sequence[str]) -> str:
        """Instructions that ask for this format, naming the valid answer labels."""

    @abstractmethod
    def render_target(self, record: QARecord) -> str:
        """The assistant text SFT trains on for `record`; `parse` of it must give record.answer."""

    @abstractmethod
    def parse(self, completion: str, labels: Sequence[str]) -> ParsedCompletion:
        """Strictly parse `completion`; never raises, whatever the text."""
