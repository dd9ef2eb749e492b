"""Samples for the reward tests: seed 001's question (gold B) and a PubMedQA question (maybe)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord
from medrl.prompts import JsonFormat, OutputFormat
from medrl.rewards import RewardSample

MCQ = QARecord(
    id="b12",
    question="Vitamin B12 is found only in foods of which origin?",
    options={"A": "Plant", "B": "Animal", "C": "Fungal", "D": "Mineral"},
    answer="B",
)
PUBMEDQA = QARecord(
    id="pqa",
    question="Does the intervention work?",
    options={label: label for label in YES_NO_MAYBE_LABELS},
    answer="maybe",
    context="A small trial.",
)


@pytest.fixture
def make_sample() -> Callable[..., RewardSample]:
    """make_sample(fmt=JsonFormat(), tokens=None, record=MCQ) -> RewardSample."""

    def _make(
        fmt: OutputFormat | None = None, tokens: int | None = None, record: QARecord = MCQ
    ) -> RewardSample:
        return RewardSample(record, fmt if fmt is not None else JsonFormat(), tokens)

    return _make


@pytest.fixture
def pubmedqa_record() -> QARecord:
    return PUBMEDQA
