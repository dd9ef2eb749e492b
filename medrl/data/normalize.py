"""Per-dataset normalizers: one raw row (a dict in the source's schema) -> one ``QARecord``.

Normalizers are pure: they see one row and a ``RowContext`` and either return a record or raise
``BadRow`` with a short ``kind`` (used to count skipped rows) and a detail. They never know the
file or hub id; the loader adds that location to the error, or counts the row when the dataset
is configured with ``on_bad_row: skip``.

Split-level checks (``check_split``) see every raw row of a split before normalization; they
catch problems no single row shows, such as a 1-based answer column read as 0-based.

``NORMALIZERS`` is the plain dict registry that ``DatasetSpec.name`` picks from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medrl.data.errors import DataError
from medrl.data.records import MCQ_LABELS, YES_NO_MAYBE_LABELS, QARecord


class BadRow(Exception):
    """One row cannot be normalized. ``kind`` is a stable short category used for counting."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class RowContext:
    """What a normalizer may know about a row besides its content.

    index: 0-based position of the row in its split (used for fallback ids, so ids stay stable
    when other rows are skipped). answer_index_base: 0 or 1, for index-valued answer columns.
    """

    dataset: str
    split: str
    index: int
    answer_index_base: int = 0

    def fallback_id(self) -> str:
        return f"{self.dataset}-{self.split}-{self.index}"


RowNormalizer = Callable[[Mapping[str, Any], RowContext], QARecord]
# Returns a problem description (the loader adds the location) or None when the split is fine.
SplitCheck = Callable[[Sequence[Mapping[str, Any]], int], "str | None"]


@dataclass(frozen=True)
class Normalizer:
    """A dataset's normalizer plus what readers and reports need.

    title: display name; labels: the answer labels in order (for label distributions);
    id_field: the row field holding the record id, filled from the key when a local ``.json``
    file is a dict keyed by id (PubMedQA's ``pubid``).
    """

    title: str
    labels: tuple[str, ...]
    normalize_row: RowNormalizer
    check_split: SplitCheck | None = None
    id_field: str = "id"


# ---------------------------------------------------------------------------------------------
# field helpers


def _text(row: Mapping[str, Any], key: str, kind: str, name: str | None = None) -> str:
    """A required non-empty string field, stripped; ``kind`` names the failure category and
    ``name`` how messages spell the field (``options.A`` for a nested one; default ``key``)."""
    name = name or key
    if key not in row or row[key] is None:
        raise BadRow(kind, f"missing field {name!r}")
    value = row[key]
    if not isinstance(value, str):
        raise BadRow("bad field type", f"field {name!r} is {type(value).__name__}, not str")
    if not value.strip():
        raise BadRow(kind, f"field {name!r} is empty")
    return value.strip()


def _strings(value: object, name: str) -> list[str]:
    """A list field (None -> []); a str or mapping here would be iterated char by char or key
    by key into silent garbage, so any other type is a bad row."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise BadRow("bad field type", f"field {name!r} is {type(value).__name__}, not a list")
    wrong = [item for item in value if not isinstance(item, str)]
    if wrong:
        raise BadRow("bad field type", f"field {name!r} holds {wrong[0]!r}, not a string")
    return list(value)


def _optional_text(value: object) -> str | None:
    """Optional free text (HF fields that the local copies lack): None or empty -> None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _answer_index(row: Mapping[str, Any], key: str, base: int, n_options: int) -> int:
    """The 0-based answer index from an index-valued column counted from ``base``."""
    value = row.get(key)
    if value is None:
        raise BadRow("missing answer", f"missing field {key!r}")
    # bool is an int subclass; True would silently read as index 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRow("bad field type", f"field {key!r} is {value!r}, not an integer")
    index = value - base
    if not 0 <= index < n_options:
        raise BadRow(
            "answer out of range",
            f"{key}={value} is outside {base}..{base + n_options - 1} "
            f"(dataset.answer_index_base={base})",
        )
    return index


# ---------------------------------------------------------------------------------------------
# MedMCQA


_MEDMCQA_OPTION_KEYS = ("opa", "opb", "opc", "opd")


def normalize_medmcqa(row: Mapping[str, Any], ctx: RowContext) -> QARecord:
    """MedMCQA row (HF ``openlifescienceai/medmcqa`` schema) -> QARecord.

    Required: question, opa..opd, cop (counted from ``ctx.answer_index_base``). Optional (HF only;
    missing from the local copy): id, exp, subject_name, topic_name, choice_type.
    """
    question = _text(row, "question", "empty question")
    options = {
        label: _text(row, key, "empty option")
        for label, key in zip(MCQ_LABELS, _MEDMCQA_OPTION_KEYS, strict=True)
    }
    answer = MCQ_LABELS[_answer_index(row, "cop", ctx.answer_index_base, len(MCQ_LABELS))]
    extra: dict[str, object] = {"split": ctx.split}
    for key in ("topic_name", "choice_type"):
        if _optional_text(row.get(key)) is not None:
            extra[key] = row[key]
    return QARecord(
        id=_optional_text(row.get("id")) or ctx.fallback_id(),
        question=question,
        options=options,
        answer=answer,
        explanation=_optional_text(row.get("exp")),
        subject=_optional_text(row.get("subject_name")),
        source=ctx.dataset,
        extra=extra,
    )


def check_medmcqa_split(rows: Sequence[Mapping[str, Any]], answer_index_base: int) -> str | None:
    """Detect a ``cop`` column counted from the other base than configured.

    A 1-based column read as 0-based would shift every answer by one and fail only on the rows
    with cop == 4; so the check looks at the whole split: base 0 with some cop == 4 and none
    == 0 means 1-based data (and symmetrically for base 1).
    """
    # Only well-typed values count: a malformed cop is the row's problem, reported per row.
    cops = {
        row.get("cop")
        for row in rows
        if isinstance(row.get("cop"), int) and not isinstance(row.get("cop"), bool)
    }
    if answer_index_base == 0 and 4 in cops and 0 not in cops:
        return (
            "the answer column 'cop' looks 1-based (some rows have cop=4, none has cop=0) but "
            "dataset.answer_index_base=0; set dataset.answer_index_base=1 (the original "
            "MedMCQA dev.json is 1-based, the Hugging Face copy 0-based)"
        )
    if answer_index_base == 1 and 0 in cops and 4 not in cops:
        return (
            "the answer column 'cop' looks 0-based (some rows have cop=0, none has cop=4) but "
            "dataset.answer_index_base=1; set dataset.answer_index_base=0"
        )
    return None


# ---------------------------------------------------------------------------------------------
# MedQA


def normalize_medqa(row: Mapping[str, Any], ctx: RowContext) -> QARecord:
    """MedQA 4-option row (GBaker/MedQA-USMLE-4-options schema) -> QARecord.

    Required: question, options {A..D: text}, answer_idx (a letter). When the ``answer`` text
    column is present it must equal ``options[answer_idx]``: a mismatch means a corrupt row.
    """
    question = _text(row, "question", "empty question")
    raw_options = row.get("options")
    if not isinstance(raw_options, Mapping):
        raise BadRow("missing option", f"field 'options' is {raw_options!r}, not a mapping")
    unknown = [label for label in raw_options if label not in MCQ_LABELS]
    if unknown:
        raise BadRow("unknown label", f"option labels {unknown} are not in {list(MCQ_LABELS)}")
    options = {
        label: _text(raw_options, label, "empty option", f"options.{label}") for label in MCQ_LABELS
    }
    answer = row.get("answer_idx")
    if answer is None:
        raise BadRow("missing answer", "missing field 'answer_idx'")
    if not isinstance(answer, str) or answer not in options:
        raise BadRow("unknown label", f"answer_idx={answer!r} is not one of {list(MCQ_LABELS)}")
    answer_text = _optional_text(row.get("answer"))
    if answer_text is not None and answer_text != options[answer]:
        raise BadRow(
            "answer mismatch",
            f"answer text {answer_text!r} differs from options[{answer!r}]={options[answer]!r}",
        )
    extra: dict[str, object] = {"split": ctx.split}
    if _optional_text(row.get("meta_info")) is not None:
        extra["meta_info"] = row["meta_info"]
    return QARecord(
        id=_optional_text(row.get("id")) or ctx.fallback_id(),
        question=question,
        options=options,
        answer=answer,
        source=ctx.dataset,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------
# PubMedQA


def _pubmedqa_context(row: Mapping[str, Any]) -> str:
    """Render ``context.contexts`` with their section labels as "LABEL: text" paragraphs."""
    context = row.get("context")
    if not isinstance(context, Mapping):
        raise BadRow("empty context", f"field 'context' is {context!r}, not a mapping")
    texts = _strings(context.get("contexts"), "context.contexts")
    labels = _strings(context.get("labels"), "context.labels")
    if not texts or not all(t.strip() for t in texts):
        raise BadRow("empty context", "context.contexts is empty or holds an empty paragraph")
    if labels and len(labels) != len(texts):
        raise BadRow(
            "bad context",
            f"context.labels has {len(labels)} entries for {len(texts)} context paragraphs",
        )
    if not labels:
        return "\n\n".join(t.strip() for t in texts)
    paragraphs = zip(labels, texts, strict=True)
    return "\n\n".join(f"{label}: {text.strip()}" for label, text in paragraphs)


def normalize_pubmedqa(row: Mapping[str, Any], ctx: RowContext) -> QARecord:
    """PubMedQA PQA-L row (HF ``qiaojin/PubMedQA`` ``pqa_labeled`` schema) -> QARecord.

    id = str(pubid) (so the official test ids file selects rows by PMID); answer =
    final_decision in yes/no/maybe; context = labelled abstract sections; explanation =
    long_answer (the abstract's conclusion).
    """
    pubid = row.get("pubid")
    if pubid is None or (isinstance(pubid, str) and not pubid.strip()):
        raise BadRow("missing id", "missing field 'pubid'")
    # A PMID is an integer (HF) or its digits (a JSON key); str() of anything else would make
    # an id no ids_file can name.
    if isinstance(pubid, bool) or not isinstance(pubid, (int, str)):
        raise BadRow("bad field type", f"field 'pubid' is {pubid!r}, not an integer or string")
    question = _text(row, "question", "empty question")
    decision = row.get("final_decision")
    if decision is None:
        raise BadRow("missing answer", "missing field 'final_decision'")
    answer = str(decision).strip().lower()
    if answer not in YES_NO_MAYBE_LABELS:
        raise BadRow(
            "unknown label", f"final_decision={decision!r} is not one of {YES_NO_MAYBE_LABELS}"
        )
    context = row["context"] if isinstance(row.get("context"), Mapping) else {}
    extra: dict[str, object] = {"split": ctx.split}
    for key in ("meshes", "reasoning_required_pred", "reasoning_free_pred"):
        if context.get(key) is not None:
            extra[key] = context[key]
    if row.get("year") is not None:
        extra["year"] = row["year"]
    return QARecord(
        id=str(pubid).strip(),
        question=question,
        options={label: label for label in YES_NO_MAYBE_LABELS},
        answer=answer,
        explanation=_optional_text(row.get("long_answer")),
        context=_pubmedqa_context(row),
        source=ctx.dataset,
        extra=extra,
    )


def normalize_bioasq(row: Mapping[str, Any], ctx: RowContext) -> QARecord:
    """BioASQ row (HF ``enelpol/rag-mini-bioasq``, config ``question-answer-passages``:
    question, answer, id, relevant_passage_ids) -> an open-ended QARecord: no options, the
    answer text as the reference (``explanation``). The passages live in the dataset's other
    config (text-corpus) and are not joined: the context is empty.
    """
    question = _text(row, "question", "empty question")
    answer = _text(row, "answer", "missing answer")
    record_id = row.get("id")
    extra: dict[str, object] = {"split": ctx.split}
    if row.get("relevant_passage_ids") is not None:
        extra["relevant_passage_ids"] = row["relevant_passage_ids"]
    return QARecord(
        id=f"bioasq-{record_id}" if record_id is not None else ctx.fallback_id(),
        question=question,
        options={},
        answer="",
        explanation=answer,
        source=ctx.dataset,
        extra=extra,
    )


NORMALIZERS: dict[str, Normalizer] = {
    "bioasq": Normalizer("BioASQ", (), normalize_bioasq),
    "medmcqa": Normalizer("MedMCQA", MCQ_LABELS, normalize_medmcqa, check_medmcqa_split),
    "medqa": Normalizer("MedQA", MCQ_LABELS, normalize_medqa),
    "pubmedqa": Normalizer("PubMedQA", YES_NO_MAYBE_LABELS, normalize_pubmedqa, id_field="pubid"),
}


def get_normalizer(name: str) -> Normalizer:
    """The registered normalizer for ``name``; an unknown name lists the valid ones."""
    if name not in NORMALIZERS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(NORMALIZERS))}")
    return NORMALIZERS[name]
