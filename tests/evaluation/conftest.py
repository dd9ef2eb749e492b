"""Fixtures of the evaluation tests: Prediction objects built by hand."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from medrl.evaluation import Prediction


def build_prediction(
    id: str,
    answer: str | None,
    gold: str,
    *,
    format_ok: bool | None = None,
    json_valid: bool | None = None,
    schema_ok: bool | None = None,
    num_tokens: int = 10,
    truncated: bool = False,
    subject: str | None = None,
) -> Prediction:
    """A Prediction scored strictly (correct = answer == gold); the format flags default to
    "parsed" (answer is not None)."""
    parsed = answer is not None
    return Prediction(
        id=id,
        prompt=f"prompt {id}",
        completion=f"completion {id}",
        answer=answer,
        gold=gold,
        correct=parsed and answer == gold,
        format_ok=parsed if format_ok is None else format_ok,
        json_valid=parsed if json_valid is None else json_valid,
        schema_ok=parsed if schema_ok is None else schema_ok,
        num_tokens=num_tokens,
        truncated=truncated,
        subject=subject,
        error=None if parsed else "no answer",
    )


@pytest.fixture
def make_pred() -> Callable[..., Prediction]:
    """make_pred(id, answer, gold, **flags) -> Prediction (see `build_prediction`)."""
    return build_prediction
