"""A dataset file that cannot be used stops loading with a message naming the file (and the row,
and the key to change), never a traceback and never silent garbage.

Cases tested elsewhere, not repeated here (tests/data/test_bad_rows.py, test_sources.py): a
malformed JSON line, a line that is not an object, empty question / option, answer out of
range, a missing MedMCQA option, a bytes-that-are-not-gzip file, a malformed ``.json`` file,
a ``.csv`` file, a missing local file, a repeated id, a 1-based answer column.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from medrl.data import DataError, DatasetSpec, load_pools

SPLIT = {"medmcqa": "validation", "medqa": "test", "pubmedqa": "train"}
GOOD: dict[str, dict[str, Any]] = {
    "medmcqa": {
        "question": "Which nerve?",
        "opa": "a",
        "opb": "b",
        "opc": "c",
        "opd": "d",
        "cop": 1,
    },
    "medqa": {
        "question": "Best treatment?",
        "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
        "answer_idx": "B",
    },
    "pubmedqa": {
        "pubid": 1,
        "question": "Does it work?",
        "context": {"contexts": ["Background."], "labels": ["BACKGROUND"]},
        "final_decision": "yes",
    },
}


def local_spec(dataset: str, path: Path, **fields: Any) -> DatasetSpec:
    """A spec reading only `path` (one pool with every row), as a config with
    dataset.source=local would."""
    split = SPLIT[dataset]
    return DatasetSpec(
        name=dataset,
        pools={"all": {"split": split}},
        source="local",
        local={"dir": path.parent, "splits": {split: path.name}},
        eval_pool=None,
        **fields,
    )


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")


def load_error(spec: DatasetSpec) -> str:
    with pytest.raises(DataError) as caught:
        load_pools(spec)
    return str(caught.value)


def changed(dataset: str, **fields: Any) -> dict[str, Any]:
    return {**GOOD[dataset], **fields}


def without(dataset: str, key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD[dataset].items() if k != key}


# ---------------------------------------------------------------------------------------------
# whole files


def test_a_gzip_file_cut_short_names_the_file_and_says_it_ended_early(tmp_path):
    whole = gzip.compress(jsonl(*[GOOD["medmcqa"]] * 20))
    path = write_bytes(tmp_path / "validation.jsonl.gz", whole[: len(whole) // 2])

    message = load_error(local_spec("medmcqa", path))

    assert message.startswith(f"{path}: cannot read: ")
    assert "Compressed file ended before the end-of-stream marker was reached" in message


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("validation.jsonl", b""),
        ("validation.jsonl", b"\n  \n\n"),
        ("validation.jsonl.gz", b""),
        ("validation.jsonl.gz", gzip.compress(b"")),
        ("validation.json", b"[]"),
    ],
    ids=["empty-jsonl", "blank-lines-only", "zero-byte-gz", "gzip-of-nothing", "empty-json-list"],
)
def test_a_file_without_rows_names_the_file_and_the_split_key(tmp_path, name, content):
    path = write_bytes(tmp_path / name, content)

    message = load_error(local_spec("medmcqa", path))

    assert message.startswith(f"{path}: no rows")
    assert "dataset.local.splits.validation" in message


def test_an_empty_json_file_is_not_valid_json_naming_the_file(tmp_path):
    path = write_bytes(tmp_path / "validation.json", b"")

    message = load_error(local_spec("medmcqa", path))

    assert message.startswith(f"{path}: not valid JSON (Expecting value")


def test_a_json_file_holding_a_scalar_says_it_expected_rows(tmp_path):
    path = write_bytes(tmp_path / "train.json", b"5")

    assert load_error(local_spec("pubmedqa", path)) == (
        f"{path}: expected a JSON list or object of rows, got int"
    )


def test_a_json_list_item_that_is_not_an_object_is_a_bad_row_named_by_item(tmp_path):
    path = write_bytes(tmp_path / "train.json", json.dumps([GOOD["pubmedqa"], 7]).encode())

    message = load_error(local_spec("pubmedqa", path))

    assert message.startswith(f"{path}, item 2: malformed row: a JSON int, not an object.")


def test_a_directory_where_the_split_file_belongs_says_so_and_how_to_point_elsewhere(tmp_path):
    folder = tmp_path / "validation.jsonl.gz"
    folder.mkdir()

    message = load_error(local_spec("medmcqa", folder))

    assert f"{folder} is a directory, not a data file" in message
    assert "MEDRL_DATA_DIR" in message and "dataset.local.dir" in message


@pytest.mark.parametrize("name", ["validation.parquet", "validation.csv.gz"])
def test_a_file_type_the_loader_does_not_read_lists_the_types_it_reads(tmp_path, name):
    path = write_bytes(tmp_path / name, b"PAR1 not rows")

    message = load_error(local_spec("medmcqa", path))

    assert message == (
        f"{path}: unsupported file type; expected one of "
        "['.jsonl', '.jsonl.gz', '.json', '.json.gz']"
    )


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        (b'{"question": "caf\xe9"}', "not valid JSON ('utf-8' codec can't decode byte 0xe9"),
        (b"\xef\xbb\xbf" + json.dumps(GOOD["medmcqa"]).encode(), "Unexpected UTF-8 BOM"),
        (b"\x00\x00", "not valid JSON (Expecting value"),
    ],
    ids=["latin-1", "byte-order-mark", "nul-bytes"],
)
def test_a_line_that_is_not_utf8_json_names_its_line(tmp_path, line, detail):
    path = write_bytes(tmp_path / "validation.jsonl", jsonl(GOOD["medmcqa"]) + line + b"\n")

    message = load_error(local_spec("medmcqa", path))

    assert message.startswith(f"{path}, line 2: malformed row: ")
    assert detail in message
    assert "dataset.on_bad_row=skip" in message


# ---------------------------------------------------------------------------------------------
# rows: a missing required field, or a field of the wrong type

MISSING_FIELDS = [
    ("medmcqa", without("medmcqa", "question"), "empty question: missing field 'question'"),
    ("medmcqa", without("medmcqa", "cop"), "missing answer: missing field 'cop'"),
    (
        "medqa",
        without("medqa", "options"),
        "missing option: field 'options' is None, not a mapping",
    ),
    (
        "medqa",
        changed("medqa", options={"A": "a", "B": "b", "C": "c"}),
        "empty option: missing field 'options.D'",
    ),
    ("medqa", without("medqa", "answer_idx"), "missing answer: missing field 'answer_idx'"),
    ("pubmedqa", without("pubmedqa", "pubid"), "missing id: missing field 'pubid'"),
    (
        "pubmedqa",
        without("pubmedqa", "final_decision"),
        "missing answer: missing field 'final_decision'",
    ),
    (
        "pubmedqa",
        without("pubmedqa", "context"),
        "empty context: field 'context' is None, not a mapping",
    ),
]

WRONG_TYPES = [
    ("medmcqa", changed("medmcqa", cop="2"), "bad field type: field 'cop' is '2', not an integer"),
    ("medmcqa", changed("medmcqa", cop=1.0), "bad field type: field 'cop' is 1.0, not an integer"),
    (
        "medmcqa",
        changed("medmcqa", cop=True),
        "bad field type: field 'cop' is True, not an integer",
    ),
    (
        "medmcqa",
        changed("medmcqa", question=42),
        "bad field type: field 'question' is int, not str",
    ),
    ("medmcqa", changed("medmcqa", opa=["a"]), "bad field type: field 'opa' is list, not str"),
    (
        "medqa",
        changed("medqa", options=["a", "b", "c", "d"]),
        "missing option: field 'options' is ['a', 'b', 'c', 'd'], not a mapping",
    ),
    (
        "medqa",
        changed("medqa", options={"A": 1, "B": "b", "C": "c", "D": "d"}),
        "bad field type: field 'options.A' is int, not str",
    ),
    (
        "medqa",
        changed("medqa", answer_idx=1),
        "unknown label: answer_idx=1 is not one of ['A', 'B', 'C', 'D']",
    ),
    (
        "pubmedqa",
        changed("pubmedqa", context={"contexts": "Background.", "labels": []}),
        "bad field type: field 'context.contexts' is str, not a list",
    ),
    (
        "pubmedqa",
        changed("pubmedqa", context={"contexts": {"p": "Background."}, "labels": []}),
        "bad field type: field 'context.contexts' is dict, not a list",
    ),
    (
        "pubmedqa",
        changed("pubmedqa", context={"contexts": ["Background."], "labels": [3]}),
        "bad field type: field 'context.labels' holds 3, not a string",
    ),
    (
        "pubmedqa",
        changed("pubmedqa", pubid={"id": 1}),
        "bad field type: field 'pubid' is {'id': 1}, not an integer or string",
    ),
    (
        "pubmedqa",
        changed("pubmedqa", final_decision=["yes"]),
        "unknown label: final_decision=['yes'] is not one of ('yes', 'no', 'maybe')",
    ),
]


def case_id(case: tuple[str, dict[str, Any], str]) -> str:
    return f"{case[0]}-{case[2].split(': ', 1)[1][:40]}"


@pytest.mark.parametrize("case", MISSING_FIELDS + WRONG_TYPES, ids=case_id)
def test_a_row_missing_a_field_or_with_a_wrong_type_names_file_line_and_field(tmp_path, case):
    dataset, row, expected = case
    path = write_bytes(tmp_path / f"{SPLIT[dataset]}.jsonl", jsonl(GOOD[dataset], row))

    message = load_error(local_spec(dataset, path))

    assert message.startswith(f"{path}, line 2: {expected}. Fix the row, or set ")
    assert "dataset.on_bad_row=skip" in message


@pytest.mark.parametrize("case", WRONG_TYPES, ids=case_id)
def test_a_row_with_a_wrong_type_is_skipped_and_counted_with_on_bad_row_skip(tmp_path, case):
    dataset, row, expected = case
    path = write_bytes(tmp_path / f"{SPLIT[dataset]}.jsonl", jsonl(GOOD[dataset], row))

    pools = load_pools(local_spec(dataset, path, on_bad_row="skip"))

    assert len(pools["all"]) == 1
    assert pools.summary.skipped == {expected.split(":", 1)[0]: 1}
