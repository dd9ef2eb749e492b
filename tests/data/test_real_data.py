"""The shipped configs on the real files in ../shared/data (skipped when it is missing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from medrl.data import DatasetPools, DatasetSpec, load_pools
from medrl.data.pools import pool_overlaps, record_id, record_text


@pytest.fixture
def real_pools(compose, shared_dir: Path):
    """real_pools(name, *overrides) -> DatasetPools from conf/dataset/<name>.yaml, local files."""

    def build(name: str, *overrides: str) -> DatasetPools:
        cfg = compose(
            "data",
            [
                f"dataset={name}",
                f"paths.data_dir={shared_dir / 'data'}",
                "dataset.source=local",
                *overrides,
            ],
        )
        return load_pools(instantiate(cfg.dataset))

    return build


def test_medmcqa_has_4183_rows_with_the_documented_label_counts(real_pools):
    pools = real_pools("medmcqa")

    split = pools.summary.split("validation")
    assert split.rows == split.records == 4183
    assert split.labels == {"A": 1348, "B": 1085, "C": 925, "D": 825}


def test_medmcqa_pools_are_cut_from_validation_and_never_overlap(real_pools):
    summary = real_pools("medmcqa").summary

    assert [(p.name, p.source_split, p.drawn) for p in summary.pools] == [
        ("eval", "validation", 500),
        ("sft", "validation", 300),
        ("grpo", "validation", 1000),
        ("val", "validation", 200),
    ]
    assert summary.notes[0].startswith(
        "MedMCQA train split is not available locally; pools are cut from validation"
    )
    assert set(summary.overlap_by_id.values()) == set(summary.overlap_by_text.values()) == {0}


def test_medqa_has_1273_rows_with_the_documented_label_counts(real_pools):
    pools = real_pools("medqa")

    split = pools.summary.split("test")
    assert split.rows == split.records == 1273
    assert split.labels == {"A": 353, "B": 309, "C": 346, "D": 265}
    assert [len(pools[name]) for name in ("eval", "sft", "grpo", "val")] == [273, 500, 400, 100]
    assert pools.summary.max_overlap == 0


def test_pubmedqa_has_1000_rows_with_the_documented_label_counts(real_pools):
    pools = real_pools("pubmedqa")

    split = pools.summary.split("train")
    assert split.rows == split.records == 1000
    assert split.labels == {"yes": 552, "no": 338, "maybe": 110}
    assert pools.summary.max_overlap == 0


def test_pubmedqa_eval_pool_is_exactly_the_official_500_test_ids(real_pools, shared_dir):
    truth_file = shared_dir / "data" / "pubmedqa" / "pqa_labeled_test_ground_truth.json"
    truth = json.loads(truth_file.read_text(encoding="utf-8"))

    pools = real_pools("pubmedqa")

    assert len(truth) == 500
    assert {record.id: record.answer for record in pools["eval"]} == truth
    assert pools.summary.pool("eval").labels == {"yes": 276, "no": 169, "maybe": 55}
    assert [len(pools["sft"]), len(pools["grpo"]), len(pools["val"])] == [250, 200, 50]


def test_smoke_limit_shrinks_every_real_pool(real_pools):
    limits = [f"+dataset.pools.{name}.limit=8" for name in ("eval", "sft", "grpo", "val")]

    pools = real_pools("pubmedqa", *limits)

    assert {name: len(records) for name, records in pools.items()} == {
        "eval": 8,
        "sft": 8,
        "grpo": 8,
        "val": 8,
    }


def test_loading_twice_gives_identical_pools(real_pools):
    first, second = real_pools("medqa"), real_pools("medqa")

    assert {k: [r.id for r in v] for k, v in first.items()} == {
        k: [r.id for r in v] for k, v in second.items()
    }


def test_real_spec_is_a_dataset_spec(compose, shared_dir):
    cfg = compose("data", ["dataset=medqa", f"paths.data_dir={shared_dir / 'data'}"])

    assert isinstance(instantiate(cfg.dataset), DatasetSpec)


@pytest.mark.parametrize("name", ["medmcqa", "medqa", "pubmedqa"])
def test_the_val_pool_shares_no_id_or_question_text_with_any_other_pool(real_pools, name):
    pools = real_pools(name)

    assert len(pools["val"]) > 0
    for key in (record_id, record_text):  # recomputed here, not read from the summary
        overlaps = pool_overlaps({n: pools[n] for n in ("eval", "sft", "grpo", "val")}, key)
        assert all(count == 0 for pair, count in overlaps.items() if "val" in pair), overlaps


def test_medmcqa_val_pool_comes_last_so_the_other_pools_keep_their_rows(real_pools):
    with_val, without = real_pools("medmcqa"), real_pools("medmcqa", "~dataset.pools.val")

    for name in ("eval", "sft", "grpo"):
        assert [r.id for r in with_val[name]] == [r.id for r in without[name]]
