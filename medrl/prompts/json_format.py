"""The JSON format of seed 001: one object with a category, a confidence and a reason.

``{"predicted_category": "B", "confidence": 0.9, "reason": "..."}``

Three levels, matching seed 001's rewards and metrics:
- ``json_valid``: the whole completion (surrounding whitespace allowed) is one JSON value.
  Trailing text, a markdown code fence or two objects make it invalid. Unlike Python's
  ``json.loads`` defaults, ``NaN`` / ``Infinity`` are rejected: they are not JSON (RFC 8259).
- ``schema_ok`` (= ``format_ok``): the value is an object whose ``predicted_category`` is a
  label, ``confidence`` a real number in [0, 1] (booleans are not numbers here) and ``reason``
  a non-empty string; extra keys are allowed, but a schema key given twice is ambiguous and fails.
- ``answer``: ``predicted_category`` when the JSON is valid and it is a label, even if another
  schema field fails; seed 001 scores accuracy on any parseable JSON, so a valid answer with a
  missing reason still counts as correct. The label must match exactly: unlike the tag
  formats, ``" B "`` is not ``"B"``, because a JSON string has no layout whitespace to forgive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from medrl.data.records import QARecord
from medrl.prompts._text import (
    check_explanation_fields,
    join_labels,
    match_label,
    target_explanation,
)
from medrl.prompts.base import OutputFormat, ParsedCompletion
from medrl.utils.config import defaults_from_config

CATEGORY_KEY = "predicted_category"
CONFIDENCE_KEY = "confidence"
REASON_KEY = "reason"
_SCHEMA_KEYS = (CATEGORY_KEY, CONFIDENCE_KEY, REASON_KEY)


class _JsonObject(dict):
    """A decoded JSON object that remembers which keys appeared more than once."""

    duplicate_keys: frozenset[str] = frozenset()


def _object_pairs(pairs: list[tuple[str, object]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):  # only then is there a duplicate to find
        seen: set[str] = set()
        duplicates: set[str] = set()
        for key, _ in pairs:
            (duplicates if key in seen else seen).add(key)
        obj.duplicate_keys = frozenset(duplicates)
    return obj


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True)
class DecodedJson:
    """The value of a completion decoded as strict JSON, or why it is not JSON."""

    value: object = None
    error: str | None = None


def decode_json(completion: str) -> DecodedJson:
    """Decode the whole `completion` as one strict JSON value; never raises on any string."""
    try:
        value = json.loads(
            completion, object_pairs_hook=_object_pairs, parse_constant=_reject_constant
        )
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, ints over the digit limit
        return DecodedJson(error=f"invalid JSON: {err}")
    except RecursionError:  # e.g. 100k nested "[": the C decoder recurses per level
        return DecodedJson(error="invalid JSON: nested too deeply")
    return DecodedJson(value=value)


def _confidence_ok(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and 0.0 <= value <= 1.0


def _schema_error(obj: Mapping[str, object], answer: str | None) -> str | None:
    """Why `obj` breaks the schema, or None; `answer` is its already-matched category."""
    duplicated = [k for k in _SCHEMA_KEYS if k in getattr(obj, "duplicate_keys", ())]
    if duplicated:
        return f"duplicate keys {duplicated}"
    if answer is None:
        return f"{CATEGORY_KEY} missing or not a valid label"
    if not _confidence_ok(obj.get(CONFIDENCE_KEY)):
        return f"{CONFIDENCE_KEY} missing or not a number in [0, 1]"
    reason = obj.get(REASON_KEY)
    if not isinstance(reason, str) or not reason.strip():
        return f"{REASON_KEY} missing or empty"
    return None


@dataclass(frozen=True)
@defaults_from_config("format/json")  # the defaults: conf/format/json.yaml
class JsonFormat(OutputFormat):
    """One JSON object (see the module docstring for the exact rules).

    case_sensitive:         ``"b"`` is rejected as a category unless False (then -> "B").
    target_confidence:      the confidence SFT targets state (seed 001 uses 0.95).
    explanation_fallback:   SFT reason when a record has no explanation; ``{label}``, ``{text}``.
    max_explanation_chars:  SFT reasons are cut to this length on a word boundary.
    """

    name: ClassVar[str] = "json"

    case_sensitive: bool
    target_confidence: float
    explanation_fallback: str
    max_explanation_chars: int

    def __post_init__(self) -> None:
        if not _confidence_ok(self.target_confidence):
            raise ValueError(f"target_confidence must be in [0, 1], got {self.target_confidence}")
        check_explanation_fields(self.explanation_fallback, self.max_explanation_chars)

    def system_prompt(self, labels: Sequence[str]) -> str:
        listed = join_labels(labels)  # first: it rejects an empty label list
        example = json.dumps(
            {CATEGORY_KEY: labels[0], CONFIDENCE_KEY: 0.8, REASON_KEY: "One short sentence."}
        )
        return (
            "You are a medical expert answering exam questions. Choose the single best answer "
            f"({listed}) and reply with exactly one JSON object with the keys "
            f'"{CATEGORY_KEY}" (the answer label), "{CONFIDENCE_KEY}" (a number from 0 to 1) '
            f'and "{REASON_KEY}" (a short explanation). Output only the JSON: no markdown code '
            f"fences, no text before or after it.\nExample:\n{example}"
        )

    def render_target(self, record: QARecord) -> str:
        reason = target_explanation(record, self.explanation_fallback, self.max_explanation_chars)
        target = {
            CATEGORY_KEY: record.answer,
            CONFIDENCE_KEY: self.target_confidence,
            REASON_KEY: reason,
        }
        return json.dumps(target, ensure_ascii=False)

    def parse(self, completion: str, labels: Sequence[str]) -> ParsedCompletion:
        decoded = decode_json(completion)
        if decoded.error is not None:
            return ParsedCompletion(answer=None, format_ok=False, error=decoded.error)
        obj = decoded.value
        if not isinstance(obj, dict):
            return ParsedCompletion(
                answer=None,
                format_ok=False,
                error=f"expected a JSON object, got {type(obj).__name__}",
                json_valid=True,
            )
        answer = self._category(obj, labels)
        reason = obj.get(REASON_KEY)
        explanation = (reason.strip() or None) if isinstance(reason, str) else None
        error = _schema_error(obj, answer)
        return ParsedCompletion(
            answer=answer,
            format_ok=error is None,
            explanation=explanation,
            error=error,
            json_valid=True,
            schema_ok=error is None,
        )

    def _category(self, obj: Mapping[str, object], labels: Sequence[str]) -> str | None:
        if CATEGORY_KEY in getattr(obj, "duplicate_keys", ()):
            return None
        category = obj.get(CATEGORY_KEY)
        if not isinstance(category, str):
            return None
        return match_label(category, labels, self.case_sensitive)
