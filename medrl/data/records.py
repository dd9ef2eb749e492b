"""The one record type every dataset is normalized to.

Every loader (MedMCQA, MedQA, PubMedQA; hub or local files) produces ``QARecord``s, and every
later stage (prompt rendering, rewards, evaluation) reads only this type, so adding a dataset
means writing one normalizer and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MCQ_LABELS: tuple[str, ...] = ("A", "B", "C", "D")
YES_NO_MAYBE_LABELS: tuple[str, ...] = ("yes", "no", "maybe")


@dataclass(frozen=True)
class QARecord:
    """One normalized question.

    ``options`` maps each answer label to its text, in presentation order (``{"A": "...", ...}``
    for multiple choice; ``{"yes": "yes", "no": "no", "maybe": "maybe"}`` for PubMedQA).
    ``answer`` is always one of ``options``' keys, except for an open-ended question (BioASQ):
    no options, ``answer`` empty and the reference answer in ``explanation``; only open-ended
    formats (format=free_text) can train or evaluate on those.
    """

    id: str
    question: str
    options: Mapping[str, str]
    answer: str
    explanation: str | None = None
    subject: str | None = None
    context: str | None = None
    source: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.options and not self.answer:
            if not (self.explanation or "").strip():
                raise ValueError(
                    f"record {self.id!r}: an open-ended question (no options) needs its "
                    "reference answer in `explanation`"
                )
            return
        if self.answer not in self.options:
            raise ValueError(
                f"record {self.id!r}: answer {self.answer!r} is not one of the option labels "
                f"{list(self.options)}"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        """The answer labels in presentation order, e.g. ``("A", "B", "C", "D")``."""
        return tuple(self.options)

    @property
    def answer_text(self) -> str:
        """The gold answer's text: its option's, or an open-ended question's reference."""
        return self.options[self.answer] if self.options else str(self.explanation)

    @property
    def open_ended(self) -> bool:
        """True for a question with no answer labels, only a reference text (BioASQ)."""
        return not self.options


_NON_WORD = re.compile(r"\W+")


def normalize_question_text(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive key used to find duplicate questions."""
    return _NON_WORD.sub(" ", text.casefold()).strip()
