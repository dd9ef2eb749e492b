"""A bad row stops loading with its file and line, or is skipped and counted by kind."""

from __future__ import annotations

import pytest

from medrl.data import DataError, load_pools

from .builders import make_spec, medmcqa_row, medqa_row, pubmedqa_row, read_records, write_rows

GOOD = [medmcqa_row(i) for i in range(4)]

BAD_MEDMCQA_ROWS = {
    "empty question": medmcqa_row(9, question="   "),
    "missing option": {k: v for k, v in medmcqa_row(9).items() if k != "opc"},
    "empty option": medmcqa_row(9, opb=""),
    "answer out of range": medmcqa_row(9, cop=7),
    "malformed JSON line": '{"question": "unterminated',
    "line that is not an object": "[1, 2, 3]",
}


def medmcqa_file_with(data_dir, bad_row, name="validation.jsonl.gz"):
    """GOOD rows with ``bad_row`` on line 3; returns (file path, spec(**fields) builder)."""
    rows = [*GOOD[:2], bad_row, *GOOD[2:]]
    path = write_rows(data_dir / "medmcqa" / name, rows)
    return path, lambda **fields: make_spec(
        "medmcqa", path.parent, {"validation": name}, {"all": {"split": "validation"}}, **fields
    )


@pytest.mark.parametrize("case", list(BAD_MEDMCQA_ROWS))
def test_bad_medmcqa_row_raises_data_error_naming_file_and_line(data_dir, case):
    path, spec = medmcqa_file_with(data_dir, BAD_MEDMCQA_ROWS[case])

    with pytest.raises(DataError) as error:
        read_records(spec(), "validation")

    assert f"{path}, line 3" in str(error.value)
    assert "dataset.on_bad_row=skip" in str(error.value)


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("empty question", "empty question"),
        ("empty option", "empty option"),
        ("answer out of range", "answer out of range"),
        ("malformed JSON line", "malformed row"),
    ],
)
def test_bad_row_is_skipped_and_counted_by_kind_with_on_bad_row_skip(data_dir, case, kind):
    _, spec = medmcqa_file_with(data_dir, BAD_MEDMCQA_ROWS[case])

    pools = load_pools(spec(on_bad_row="skip"))

    split = pools.summary.split("validation")
    assert (split.rows, split.records, dict(split.skipped)) == (5, 4, {kind: 1})
    assert len(pools["all"]) == 4
    assert pools.summary.skipped == {kind: 1}


def test_skipped_row_keeps_the_fallback_ids_of_the_rows_after_it(data_dir):
    _, spec = medmcqa_file_with(data_dir, BAD_MEDMCQA_ROWS["empty question"])

    ids = [record.id for record in read_records(spec(on_bad_row="skip"), "validation")]

    assert ids == [f"medmcqa-validation-{i}" for i in (0, 1, 3, 4)]


def test_medqa_unknown_answer_label_names_the_file_and_line(data_dir):
    rows = [medqa_row(0), medqa_row(1, answer_idx="E")]
    path = write_rows(data_dir / "medqa" / "test.jsonl", rows)
    spec = make_spec("medqa", path.parent, {"test": "test.jsonl"}, {"all": {"split": "test"}})

    with pytest.raises(DataError, match=r"test\.jsonl, line 2: unknown label"):
        read_records(spec, "test")


def test_medqa_option_label_outside_a_to_d_is_an_unknown_label(data_dir):
    row = medqa_row(0, options={"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"})
    path = write_rows(data_dir / "medqa" / "test.jsonl", [row])
    spec = make_spec("medqa", path.parent, {"test": "test.jsonl"}, {"all": {"split": "test"}})

    with pytest.raises(DataError, match="line 1: unknown label"):
        read_records(spec, "test")


def test_medqa_answer_text_that_differs_from_the_answer_option_is_a_bad_row(data_dir):
    path = write_rows(data_dir / "medqa" / "test.jsonl", [medqa_row(0, answer="Something else")])
    spec = make_spec("medqa", path.parent, {"test": "test.jsonl"}, {"all": {"split": "test"}})

    with pytest.raises(DataError, match="line 1: answer mismatch"):
        read_records(spec, "test")


def test_pubmedqa_unknown_final_decision_names_the_file_and_line(data_dir):
    rows = [pubmedqa_row(1), pubmedqa_row(2, "perhaps")]
    path = write_rows(data_dir / "pubmedqa" / "pqa.jsonl.gz", rows)
    spec = make_spec(
        "pubmedqa", path.parent, {"train": "pqa.jsonl.gz"}, {"all": {"split": "train"}}
    )

    with pytest.raises(DataError, match=r"pqa\.jsonl\.gz, line 2: unknown label"):
        read_records(spec, "train")


def test_pubmedqa_empty_context_is_a_bad_row(data_dir):
    row = pubmedqa_row(1, context={"contexts": [], "labels": []})
    path = write_rows(data_dir / "pubmedqa" / "pqa.jsonl", [row])
    spec = make_spec("pubmedqa", path.parent, {"train": "pqa.jsonl"}, {"all": {"split": "train"}})

    with pytest.raises(DataError, match="line 1: empty context"):
        read_records(spec, "train")


def test_repeated_id_in_a_split_is_a_bad_row(data_dir):
    rows = [pubmedqa_row(7), pubmedqa_row(8), pubmedqa_row(7)]
    path = write_rows(data_dir / "pubmedqa" / "pqa.jsonl", rows)
    spec = make_spec("pubmedqa", path.parent, {"train": "pqa.jsonl"}, {"all": {"split": "train"}})

    with pytest.raises(DataError, match="line 3: duplicate id: id '7' is also at .*line 1"):
        read_records(spec, "train")


def test_one_based_cop_read_as_zero_based_asks_for_answer_index_base_1(data_dir):
    rows = [medmcqa_row(i, cop=1 + i % 4) for i in range(8)]  # cop 1..4, never 0
    path = write_rows(data_dir / "medmcqa" / "dev.jsonl", rows)
    spec = make_spec(
        "medmcqa", path.parent, {"validation": "dev.jsonl"}, {"all": {"split": "validation"}}
    )

    with pytest.raises(DataError, match="dataset.answer_index_base=1") as error:
        read_records(spec, "validation")
    assert "dev.jsonl" in str(error.value)


def test_one_based_check_is_not_skippable(data_dir):
    rows = [medmcqa_row(i, cop=1 + i % 4) for i in range(8)]
    path = write_rows(data_dir / "medmcqa" / "dev.jsonl", rows)
    spec = make_spec(
        "medmcqa",
        path.parent,
        {"validation": "dev.jsonl"},
        {"all": {"split": "validation"}},
        on_bad_row="skip",
    )

    with pytest.raises(DataError, match="dataset.answer_index_base=1"):
        read_records(spec, "validation")


def test_zero_based_cop_read_as_one_based_asks_for_answer_index_base_0(data_dir):
    path = write_rows(data_dir / "medmcqa" / "v.jsonl", [medmcqa_row(i) for i in range(8)])
    spec = make_spec(
        "medmcqa",
        path.parent,
        {"validation": "v.jsonl"},
        {"all": {"split": "validation"}},
        answer_index_base=1,
    )

    with pytest.raises(DataError, match="dataset.answer_index_base=0"):
        read_records(spec, "validation")


def test_malformed_json_file_names_the_file(data_dir):
    path = data_dir / "medqa" / "test.json"
    path.parent.mkdir()
    path.write_text('[{"question": ', encoding="utf-8")
    spec = make_spec("medqa", path.parent, {"test": "test.json"}, {"all": {"split": "test"}})

    with pytest.raises(DataError, match=r"test\.json: not valid JSON"):
        read_records(spec, "test")


def test_corrupt_gzip_file_names_the_file(data_dir):
    path = data_dir / "medqa" / "test.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(b"not gzip at all")
    spec = make_spec("medqa", path.parent, {"test": "test.jsonl.gz"}, {"all": {"split": "test"}})

    with pytest.raises(DataError, match=r"test\.jsonl\.gz: cannot read"):
        read_records(spec, "test")
