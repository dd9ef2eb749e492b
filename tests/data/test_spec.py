"""DatasetSpec validates everything it can before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrl.data import DataError, DatasetSpec, LocalSpec, PoolSpec

POOLS = {"eval": {"split": "test", "size": 2}}


def test_pool_limit_defaults_to_none_and_is_described():
    assert PoolSpec("train", size=10).limit is None
    assert PoolSpec("train", size=10, limit=8).describe() == "size 10, limit 8"
    assert PoolSpec("train", ids_file="x/test.json").describe() == "ids test.json"
    assert PoolSpec("train").describe() == "rest"


@pytest.mark.parametrize("limit", [-1, 1.5, True, "8"])
def test_pool_limit_must_be_a_non_negative_integer(limit):
    with pytest.raises(DataError, match="pool limit"):
        PoolSpec("train", limit=limit)


def test_pool_takes_only_one_selection():
    with pytest.raises(DataError, match="one of size, range, ids_file"):
        PoolSpec("train", size=3, range=(0, 3))


def test_pool_range_becomes_a_tuple_and_must_be_ordered():
    assert PoolSpec("train", range=[2, 5]).range == (2, 5)
    with pytest.raises(DataError, match="start <= stop"):
        PoolSpec("train", range=[5, 2])


def test_unknown_source_and_bad_row_policy_are_rejected():
    with pytest.raises(DataError, match="auto, local, hub"):
        DatasetSpec(name="medqa", pools=POOLS, source="s3")
    with pytest.raises(DataError, match="error, skip"):
        DatasetSpec(name="medqa", pools=POOLS, on_bad_row="ignore")


def test_eval_pool_must_name_a_pool():
    with pytest.raises(DataError, match="dataset.eval_pool='eval'"):
        DatasetSpec(name="medqa", pools={"sft": {"split": "train"}})


def test_split_alias_must_point_at_a_split_with_a_file():
    with pytest.raises(DataError, match="not one of local.splits"):
        LocalSpec(dir=Path("."), splits={"test": "t.jsonl"}, split_aliases={"train": "dev"})
