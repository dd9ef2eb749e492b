"""Source resolution (auto/local/hub), the hub reader's contract, ids files and file types.

The hub is never reached: the hub reader, or ``datasets.load_dataset`` itself, is replaced.
"""

from __future__ import annotations

import pytest

from medrl.data import DataError, load_pools
from medrl.data import sources as sources_module
from medrl.data.sources import RawRow, read_hub_rows, read_ids_file, read_local_rows
from medrl.data.spec import HubSpec

from .builders import make_spec, medqa_row, write_json, write_rows


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace the hub reader; returns the list of (hub id, split) it was asked for."""
    calls = []

    def read_hub_rows(hub, split):
        calls.append((hub.id, split))
        return [RawRow(i, f"hub row {i}", data=medqa_row(i)) for i in range(12)]

    monkeypatch.setattr(sources_module, "read_hub_rows", read_hub_rows)
    return calls


def medqa_spec(data_dir, **fields):
    pools = {"eval": {"split": "test", "size": 4}, "sft": {"split": "train", "size": 4}}
    fields.setdefault("source", "auto")
    fields.setdefault("split_aliases", {"train": "test"})
    return make_spec("medqa", data_dir / "medqa", {"test": "test.jsonl.gz"}, pools, **fields)


def test_auto_reads_local_files_when_every_needed_file_exists(data_dir, fake_hub):
    write_rows(data_dir / "medqa" / "test.jsonl.gz", [medqa_row(i) for i in range(12)])

    summary = load_pools(medqa_spec(data_dir)).summary

    assert (summary.source, summary.requested_source) == ("local", "auto")
    assert fake_hub == []


def test_auto_reads_the_hub_when_a_local_file_is_missing(data_dir, fake_hub):
    summary = load_pools(medqa_spec(data_dir)).summary

    assert (summary.source, summary.location) == ("hub", "GBaker/MedQA-USMLE-4-options")
    assert sorted(fake_hub) == [
        ("GBaker/MedQA-USMLE-4-options", "test"),
        ("GBaker/MedQA-USMLE-4-options", "train"),
    ]
    assert "does not exist" in summary.notes[0] and "reading the hub" in summary.notes[0]


def test_hub_source_uses_the_requested_splits_without_local_aliases(data_dir, fake_hub):
    write_rows(data_dir / "medqa" / "test.jsonl.gz", [medqa_row(i) for i in range(12)])

    summary = load_pools(medqa_spec(data_dir, source="hub")).summary

    assert summary.source == "hub"
    assert summary.pool("sft").source_split == "train"
    assert summary.notes == ()


def test_local_source_with_a_missing_file_says_how_to_point_at_the_data(data_dir, fake_hub):
    with pytest.raises(DataError, match="MEDRL_DATA_DIR") as error:
        load_pools(medqa_spec(data_dir, source="local"))

    assert "test.jsonl.gz does not exist" in str(error.value)
    assert fake_hub == []


def test_local_source_with_a_split_that_has_no_file_or_alias_is_an_error(data_dir, fake_hub):
    write_rows(data_dir / "medqa" / "test.jsonl.gz", [medqa_row(i) for i in range(12)])

    with pytest.raises(DataError, match="split 'train' has no local file"):
        load_pools(medqa_spec(data_dir, source="local", split_aliases={}))


def test_source_defaults_to_the_environment_variable(data_dir, monkeypatch):
    monkeypatch.setenv("MEDRL_DATA_SOURCE", "hub")

    assert medqa_spec(data_dir, source=None).source == "hub"


def test_hub_failure_says_to_use_dataset_source_local(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'GBaker/MedQA-USMLE-4-options' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)

    with pytest.raises(DataError, match="dataset.source=local") as error:
        read_hub_rows(HubSpec("GBaker/MedQA-USMLE-4-options"), "test")
    assert "MEDRL_DATA_DIR" in str(error.value)
    assert "Couldn't reach" in str(error.value)


def test_hub_reader_passes_path_name_split_and_revision(monkeypatch):
    import datasets

    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return [{"pubid": 1, "question": "Q?"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)

    rows = read_hub_rows(HubSpec("qiaojin/PubMedQA", "pqa_labeled", "abc123"), "train")

    assert calls == [("qiaojin/PubMedQA", "pqa_labeled", {"split": "train", "revision": "abc123"})]
    assert rows[0].data == {"pubid": 1, "question": "Q?"}
    assert rows[0].where == "hub qiaojin/PubMedQA[pqa_labeled]@abc123 split 'train' row 0"


def test_bad_hub_row_is_named_by_hub_id_split_and_row(data_dir, monkeypatch):
    def read_hub_rows(hub, split):
        bad = medqa_row(1, question="")
        return [
            RawRow(i, f"hub {hub.id} split {split!r} row {i}", data=row)
            for i, row in enumerate([medqa_row(0), bad])
        ]

    monkeypatch.setattr(sources_module, "read_hub_rows", read_hub_rows)

    with pytest.raises(DataError, match=r"hub GBaker/MedQA-USMLE-4-options split 'test' row 1"):
        load_pools(medqa_spec(data_dir, source="hub"))


def test_ids_file_may_be_a_list_or_an_object_keyed_by_id(tmp_path):
    as_list = write_json(tmp_path / "a.json", [1, "2"])
    as_dict = write_json(tmp_path / "b.json", {"1": "yes", "2": "no"})

    assert read_ids_file(as_list) == read_ids_file(as_dict) == ["1", "2"]


def test_ids_file_with_a_repeated_id_is_an_error(tmp_path):
    with pytest.raises(DataError, match="more than once"):
        read_ids_file(write_json(tmp_path / "ids.json", ["1", "1"]))


def test_missing_ids_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_ids_file(tmp_path / "nope.json")


def test_unsupported_file_type_lists_the_supported_ones(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("question\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"unsupported file type.*\.jsonl\.gz"):
        read_local_rows(path)
