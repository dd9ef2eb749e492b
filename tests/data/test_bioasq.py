"""BioASQ, the open-ended dataset: its normalizer on rows in the Hub's schema, its records
without labels, and its pools read from split files in the local layout."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from medrl.data import load_pools
from medrl.data.normalize import BadRow, RowContext, normalize_bioasq
from medrl.data.records import QARecord
from medrl.data.report import print_summary

from .builders import bioasq_rows, write_bioasq

CTX = RowContext(dataset="bioasq", split="train", index=3)


def test_a_row_becomes_an_open_ended_record_with_the_answer_as_its_reference():
    record = normalize_bioasq(bioasq_rows(1, start=7)[0], CTX)

    assert record.id == "bioasq-7" and record.source == "bioasq"
    assert record.open_ended and record.options == {} and record.answer == ""
    assert record.explanation == record.answer_text == "Gene G7 is mutated in disease 7."
    assert record.extra["relevant_passage_ids"] == [7, 8]


def test_a_row_without_an_answer_is_a_bad_row():
    row = {"question": "Why?", "answer": "  ", "id": 1}

    with pytest.raises(BadRow, match="missing answer: field 'answer' is empty"):
        normalize_bioasq(row, CTX)


def test_a_row_without_an_id_takes_its_position():
    row = {"question": "Why?", "answer": "Because."}

    assert normalize_bioasq(row, CTX).id == "bioasq-train-3"


def test_an_open_ended_record_needs_its_reference():
    with pytest.raises(ValueError, match="needs its reference answer in `explanation`"):
        QARecord(id="x", question="Why?", options={}, answer="")


def test_pools_are_cut_from_local_split_files(compose, tmp_path):
    folder = write_bioasq(tmp_path / "bioasq")
    overrides = [
        "dataset=bioasq",
        "dataset.source=local",
        f"dataset.local.dir={folder}",
        "dataset.pools.eval.size=4",
        "dataset.pools.sft.size=6",
        "dataset.pools.val.size=2",
    ]
    spec = instantiate(compose("train", overrides).dataset)

    pools = load_pools(spec)

    assert {name: len(records) for name, records in pools.items()} == {
        "eval": 4,
        "sft": 6,
        "val": 2,
        "grpo": 4,
    }
    assert all(r.open_ended for records in pools.values() for r in records)
    assert pools.summary.labels == () and pools.summary.max_overlap == 0
    print_summary(pools.summary)  # the report has no label columns and must still render
