"""Judge rubrics (medrl/rewards/judge/rubrics/*.yaml): criteria and evaluation steps,
versioned; the messages sent to the judge, and the parser of its reply.

The judge answers with one integer on a 1-5 scale (G-Eval's form: criteria plus evaluation
steps, Liu et al. 2023, arXiv:2303.16634); medrl maps it to [0, 1] as (s - 1) / 4, so judge
rewards sit in the same range as the others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medrl.data.records import QARecord

SCALE = (1, 5)
NEEDS = ("reference", "context")  # what a rubric may require besides question and answer
# The whole reply (whitespace aside) is one integer, optionally after "Score:", optionally
# followed by a period or a slash-scale ("4", "Score: 4", "4/5", "4."). Anything else fails.
_SCORE = re.compile(r"\s*(?:score\s*[:=]?\s*)?(\d+)\s*(?:/\s*5)?\s*\.?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    """A graded example shown to the judge before the real case (a few-shot turn pair): small
    judges follow the one-integer reply format far more often with them."""

    question: str
    answer: str
    score: int
    reference: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class Rubric:
    """One judging criterion. `needs` names the record fields the judge must see."""

    name: str
    version: int
    criteria: str
    steps: tuple[str, ...]
    needs: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.needs) - set(NEEDS))
        if unknown:
            raise ValueError(f"rubric {self.name!r}: unknown needs {unknown}; valid: {list(NEEDS)}")
        if not self.criteria.strip() or not self.steps:
            raise ValueError(f"rubric {self.name!r}: criteria and steps must not be empty")
        low, high = SCALE
        for example in self.examples:
            if not low <= example.score <= high:
                raise ValueError(
                    f"rubric {self.name!r}: example score {example.score} not in {SCALE}"
                )
            for need in self.needs:
                if not getattr(example, need):
                    raise ValueError(f"rubric {self.name!r}: every example needs a {need}")


def load_rubric(path: str | Path) -> Rubric:
    """A rubric from its yaml file; a missing key raises naming the file."""
    data: Mapping[str, Any] = yaml.safe_load(Path(path).read_text())
    missing = sorted({"name", "version", "criteria", "steps"} - set(data))
    if missing:
        raise ValueError(f"rubric file {path}: missing keys {missing}")
    return Rubric(
        name=str(data["name"]),
        version=int(data["version"]),
        criteria=str(data["criteria"]),
        steps=tuple(str(step) for step in data["steps"]),
        needs=tuple(data.get("needs") or ()),
        examples=tuple(Example(**example) for example in data.get("examples") or ()),
    )


def render_judge_messages(rubric: Rubric, record: QARecord, answer: str) -> list[dict[str, str]]:
    """Chat messages asking the judge for one integer score: the rubric as the system turn,
    each example as a (case, score) turn pair, then the case to grade."""
    low, high = SCALE
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(rubric.steps, start=1))
    system = (
        "You are a strict medical examiner grading one answer to one question.\n"
        f"Criteria: {rubric.criteria.strip()}\nEvaluation steps:\n{steps}\n"
        f"Reply with a single integer from {low} (worst) to {high} (best) and nothing else."
    )
    messages = [{"role": "system", "content": system}]
    for example in rubric.examples:
        case = _case(rubric, example.question, example.context, example.reference, example.answer)
        messages += [
            {"role": "user", "content": case},
            {"role": "assistant", "content": str(example.score)},
        ]
    reference = record.explanation or record.answer_text
    case = _case(rubric, record.question, record.context, reference, answer)
    messages.append({"role": "user", "content": case})
    return messages


def _case(
    rubric: Rubric, question: str, context: str | None, reference: str | None, answer: str
) -> str:
    parts = []
    if "context" in rubric.needs:
        parts.append(f"Context:\n{(context or '').strip()}")
    parts.append(f"Question: {question.strip()}")
    if "reference" in rubric.needs:
        parts.append(f"Reference answer: {(reference or '').strip()}")
    parts.append(f"Answer to grade: {answer.strip()}")
    return "\n\n".join(parts)


def parse_score(reply: str | None) -> float | None:
    """The reply's score mapped to [0, 1], or None when the reply is not one in-range integer."""
    if reply is None:
        return None
    match = _SCORE.fullmatch(reply)
    if match is None:
        return None
    low, high = SCALE
    value = int(match.group(1))
    if not low <= value <= high:
        return None
    return (value - low) / (high - low)
