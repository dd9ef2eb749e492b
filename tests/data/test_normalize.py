"""Each normalizer turns rows, read from files in the real layout, into QARecords."""

from __future__ import annotations

import pytest

from medrl.data.errors import DataError
from medrl.data.normalize import NORMALIZERS, get_normalizer
from medrl.data.records import MCQ_LABELS, YES_NO_MAYBE_LABELS

from .builders import (
    make_spec,
    medmcqa_row,
    medqa_row,
    pubmedqa_row,
    read_records,
    write_json,
    write_rows,
)


def test_medmcqa_local_row_becomes_a_record_with_letter_answer_and_fallback_id(data_dir):
    write_rows(data_dir / "medmcqa" / "validation.jsonl.gz", [medmcqa_row(0), medmcqa_row(1)])
    spec = make_spec(
        "medmcqa",
        data_dir / "medmcqa",
        {"validation": "validation.jsonl.gz"},
        {"all": {"split": "validation"}},
    )

    first, second = read_records(spec, "validation")

    assert first.id == "medmcqa-validation-0"
    assert first.question == "Which nerve supplies muscle number 0?"
    assert first.options == {"A": "Nerve 0a", "B": "Nerve 0b", "C": "Nerve 0c", "D": "Nerve 0d"}
    assert (first.answer, second.answer) == ("A", "B")
    assert first.explanation is None and first.subject is None
    assert first.source == "medmcqa"
    assert first.extra["split"] == "validation"


def test_medmcqa_hf_schema_row_keeps_id_explanation_subject_and_topic(data_dir):
    row = medmcqa_row(
        3,
        id="e9ad821a-c438",
        exp="Because.",
        subject_name="Anatomy",
        topic_name="Nerves",
        choice_type="single",
    )
    write_rows(data_dir / "medmcqa" / "train.jsonl.gz", [row])
    spec = make_spec(
        "medmcqa", data_dir / "medmcqa", {"train": "train.jsonl.gz"}, {"all": {"split": "train"}}
    )

    (record,) = read_records(spec, "train")

    assert record.id == "e9ad821a-c438"
    assert record.answer == "D"
    assert record.explanation == "Because."
    assert record.subject == "Anatomy"
    assert record.extra["topic_name"] == "Nerves"
    assert record.extra["choice_type"] == "single"


def test_medmcqa_one_based_cop_is_read_with_answer_index_base_1(data_dir):
    write_rows(data_dir / "medmcqa" / "dev.jsonl", [medmcqa_row(0, cop=1), medmcqa_row(1, cop=4)])
    spec = make_spec(
        "medmcqa",
        data_dir / "medmcqa",
        {"validation": "dev.jsonl"},
        {"all": {"split": "validation"}},
        answer_index_base=1,
    )

    assert [r.answer for r in read_records(spec, "validation")] == ["A", "D"]


def test_medqa_row_becomes_a_record_with_letter_answer_and_meta_info(data_dir):
    write_rows(data_dir / "medqa" / "test.jsonl.gz", [medqa_row(2)])
    spec = make_spec(
        "medqa", data_dir / "medqa", {"test": "test.jsonl.gz"}, {"all": {"split": "test"}}
    )

    (record,) = read_records(spec, "test")

    assert record.id == "medqa-test-0"
    assert record.options["C"] == "Drug 2c"
    assert record.answer == "C"
    assert record.answer_text == "Drug 2c"
    assert record.extra["meta_info"] == "step1"


def test_pubmedqa_row_becomes_a_yes_no_maybe_record_with_context_and_long_answer(data_dir):
    write_rows(data_dir / "pubmedqa" / "pqa_labeled.jsonl.gz", [pubmedqa_row(21645374, "Maybe")])
    spec = make_spec(
        "pubmedqa",
        data_dir / "pubmedqa",
        {"train": "pqa_labeled.jsonl.gz"},
        {"all": {"split": "train"}},
    )

    (record,) = read_records(spec, "train")

    assert record.id == "21645374"
    assert record.options == {"yes": "yes", "no": "no", "maybe": "maybe"}
    assert record.answer == "maybe"
    assert record.context == (
        "BACKGROUND: Background of study 21645374.\n\nMETHODS: Methods of study 21645374."
    )
    assert record.explanation == "Treatment 21645374 helps."
    assert record.extra["year"] == "2001"
    assert record.extra["meshes"] == ["Humans"]


def test_pubmedqa_json_dict_keyed_by_pmid_takes_the_id_from_the_key(data_dir):
    row = pubmedqa_row(0, "no")
    del row["pubid"]
    write_json(data_dir / "pubmedqa" / "pqa.json", {"12377809": row})
    spec = make_spec(
        "pubmedqa", data_dir / "pubmedqa", {"train": "pqa.json"}, {"all": {"split": "train"}}
    )

    (record,) = read_records(spec, "train")

    assert record.id == "12377809"
    assert record.answer == "no"


def test_json_list_of_rows_is_read_like_jsonl(data_dir):
    write_json(data_dir / "medqa" / "test.json", [medqa_row(0), medqa_row(1)])
    spec = make_spec("medqa", data_dir / "medqa", {"test": "test.json"}, {"all": {"split": "test"}})

    assert [r.answer for r in read_records(spec, "test")] == ["A", "B"]


def test_blank_lines_are_not_rows_and_do_not_shift_fallback_ids(data_dir):
    write_rows(data_dir / "medqa" / "test.jsonl", [medqa_row(0), "", medqa_row(1)])
    spec = make_spec(
        "medqa", data_dir / "medqa", {"test": "test.jsonl"}, {"all": {"split": "test"}}
    )

    assert [r.id for r in read_records(spec, "test")] == ["medqa-test-0", "medqa-test-1"]


def test_registry_lists_the_four_datasets_with_their_labels():
    assert sorted(NORMALIZERS) == ["bioasq", "medmcqa", "medqa", "pubmedqa"]
    assert get_normalizer("medqa").labels == MCQ_LABELS
    assert get_normalizer("pubmedqa").labels == YES_NO_MAYBE_LABELS
    assert get_normalizer("bioasq").labels == (), "open-ended: no labels"


def test_unknown_dataset_name_lists_the_valid_names():
    with pytest.raises(DataError, match="bioasq, medmcqa, medqa, pubmedqa"):
        get_normalizer("mmlu")
