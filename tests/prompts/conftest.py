"""Records and the real Qwen3 tokenizer for the prompt tests (tests/conftest.py is shared)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord

MCQ_OPTIONS = {
    "A": "Haemophilus influenzae",
    "B": "Streptococcus pneumoniae",
    "C": "Klebsiella pneumoniae",
    "D": "Staphylococcus aureus",
}


def mcq(explanation: str | None = "Pneumococcus is the leading cause in adults.") -> QARecord:
    """A MedMCQA-style record whose answer is B."""
    return QARecord(
        id="mcq-1",
        question="What is the most common cause of community-acquired pneumonia in adults?",
        options=MCQ_OPTIONS,
        answer="B",
        explanation=explanation,
        source="medmcqa",
    )


def pubmedqa(explanation: str | None = "The trial was underpowered.") -> QARecord:
    """A PubMedQA-style record (context + yes/no/maybe) whose answer is maybe."""
    return QARecord(
        id="pqa-1",
        question="Does early mobilisation shorten hospital stay after hip surgery?",
        options={label: label for label in YES_NO_MAYBE_LABELS},
        answer="maybe",
        explanation=explanation,
        context="Sixty patients were randomised.\nLength of stay fell by 0.4 days (p = 0.21).",
        source="pubmedqa",
    )


@pytest.fixture
def mcq_record() -> QARecord:
    return mcq()


@pytest.fixture
def pubmedqa_record() -> QARecord:
    return pubmedqa()


@pytest.fixture(params=["mcq", "pubmedqa"])
def make_record(request) -> Callable[..., QARecord]:
    """make_record(explanation) -> an MCQ or a PubMedQA record (the test runs for both)."""
    return {"mcq": mcq, "pubmedqa": pubmedqa}[request.param]


@pytest.fixture(scope="session")
def qwen3_tokenizer_path(shared_dir: Path) -> Path:
    path = shared_dir / "tokenizers" / "qwen3"
    if not path.is_dir():
        pytest.skip(f"Qwen3 tokenizer not found at {path}")
    return path


@pytest.fixture(scope="session")
def qwen3_tokenizer(qwen3_tokenizer_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_tokenizer_path))
