"""Pools: seeded, disjoint, sized as asked, de-duplicated against eval, with exact errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrl.data import DataError, PoolSpec, QARecord, load_pools
from medrl.data.pools import (
    finalize_pools,
    label_counts,
    pool_overlaps,
    record_id,
    select_pools,
    shuffle_records,
    shuffled_order,
)

from .builders import make_spec, medmcqa_row, pubmedqa_row, write_json, write_rows


def record(i: int, question: str | None = None) -> QARecord:
    return QARecord(
        id=f"r{i}",
        question=question or f"Question number {i}?",
        options={"A": "a", "B": "b"},
        answer="AB"[i % 2],
    )


def ids(records) -> list[str]:
    return [r.id for r in records]


# --- pure functions --------------------------------------------------------------------------


def test_shuffled_order_is_a_fixed_permutation_for_a_seed():
    # Pinned: random.Random(seed).shuffle is specified, so this holds on every machine.
    assert shuffled_order(8, seed=42) == [3, 4, 6, 7, 2, 5, 0, 1]
    assert shuffled_order(100, seed=42) == shuffled_order(100, seed=42)
    assert shuffled_order(100, seed=42) != shuffled_order(100, seed=43)


def test_shuffle_drops_skipped_rows_without_moving_the_others():
    rows = [record(i) for i in range(20)]
    with_gap = [None if i == 5 else r for i, r in enumerate(rows)]

    full, gapped = shuffle_records(rows, seed=1), shuffle_records(with_gap, seed=1)

    assert ids(gapped) == [i for i in ids(full) if i != "r5"]


def test_size_pools_are_consecutive_slices_in_declaration_order():
    rows = [record(i) for i in range(10)]
    pools = {"a": PoolSpec("s", size=3), "b": PoolSpec("s", size=4), "c": PoolSpec("s")}

    drawn = select_pools(rows, pools, {}, "s")

    assert ids(drawn["a"]) == ["r0", "r1", "r2"]
    assert ids(drawn["b"]) == ["r3", "r4", "r5", "r6"]
    assert ids(drawn["c"]) == ["r7", "r8", "r9"]


def test_range_pool_takes_exact_positions_and_size_pools_skip_them():
    rows = [record(i) for i in range(10)]
    pools = {"r": PoolSpec("s", range=(0, 2)), "a": PoolSpec("s", size=3)}

    drawn = select_pools(rows, pools, {}, "s")

    assert ids(drawn["r"]) == ["r0", "r1"]
    assert ids(drawn["a"]) == ["r2", "r3", "r4"]


def test_ids_pool_claims_its_rows_before_size_pools_declared_earlier():
    rows = [record(i) for i in range(6)]
    pools = {"a": PoolSpec("s", size=2), "ev": PoolSpec("s", ids_file="unused.json")}

    drawn = select_pools(rows, pools, {"ev": ["r0", "r3"]}, "s")

    assert ids(drawn["ev"]) == ["r0", "r3"]
    assert ids(drawn["a"]) == ["r1", "r2"]
    assert list(drawn) == ["a", "ev"]  # declaration order is kept


def test_pool_larger_than_the_remaining_rows_names_the_pool_and_the_numbers():
    rows = [record(i) for i in range(10)]
    pools = {"eval": PoolSpec("s", size=4), "sft": PoolSpec("s", size=7)}

    with pytest.raises(DataError, match=r"pool 'sft' asks for 7 rows .* only 6 of its 10 rows"):
        select_pools(rows, pools, {}, "s")


def test_range_past_the_end_of_the_split_is_an_error():
    with pytest.raises(DataError, match=r"range 5:12 of split 's', which has 10 rows"):
        select_pools([record(i) for i in range(10)], {"r": PoolSpec("s", range=(5, 12))}, {}, "s")


def test_range_into_rows_of_an_earlier_pool_is_an_error():
    pools = {"a": PoolSpec("s", size=5), "r": PoolSpec("s", range=(3, 6))}

    with pytest.raises(DataError, match="pool 'r' overlaps pool 'a'"):
        select_pools([record(i) for i in range(10)], pools, {}, "s")


def test_rest_pool_with_no_rows_left_is_an_error():
    pools = {"a": PoolSpec("s", size=3), "rest": PoolSpec("s")}

    with pytest.raises(DataError, match="pool 'rest' takes the rest"):
        select_pools([record(i) for i in range(3)], pools, {}, "s")


def test_ids_missing_from_the_split_are_an_error_naming_them():
    pools = {"ev": PoolSpec("s", ids_file="t.json")}

    with pytest.raises(DataError, match=r"1 of the 2 ids .* not in split 's' .*'r99'"):
        select_pools([record(i) for i in range(3)], pools, {"ev": ["r1", "r99"]}, "s")


def test_dedup_drops_questions_of_the_eval_pool_ignoring_case_and_punctuation():
    drawn = {
        "eval": [record(0, "What causes  scurvy?")],
        "sft": [record(1, "what causes scurvy"), record(2)],
    }

    final, removed = finalize_pools(drawn, "eval", {})

    assert ids(final["sft"]) == ["r2"]
    assert removed == {"eval": 0, "sft": 1}


def test_dedup_drops_questions_of_earlier_pools_but_not_within_a_pool():
    drawn = {
        "sft": [record(1, "Same?"), record(2, "same")],
        "grpo": [record(3, "SAME!"), record(4)],
    }

    final, removed = finalize_pools(drawn, None, {})

    assert ids(final["sft"]) == ["r1", "r2"]
    assert ids(final["grpo"]) == ["r4"]
    assert removed == {"sft": 0, "grpo": 1}


def test_eval_pool_declared_last_still_wins_dedup():
    drawn = {"sft": [record(1, "Shared question")], "eval": [record(2, "shared question.")]}

    final, removed = finalize_pools(drawn, "eval", {})

    assert final == {"sft": [], "eval": drawn["eval"]}
    assert removed["sft"] == 1


def test_limit_keeps_the_first_records_after_dedup():
    drawn = {"eval": [record(0)], "sft": [record(0), *(record(i) for i in range(1, 6))]}

    final, _ = finalize_pools(drawn, "eval", {"sft": 2, "eval": None})

    assert ids(final["sft"]) == ["r1", "r2"]


def test_overlap_counts_shared_keys_for_every_pair():
    pools = {"a": [record(1), record(2)], "b": [record(2)], "c": [record(3)]}

    assert pool_overlaps(pools, record_id) == {("a", "b"): 1, ("a", "c"): 0, ("b", "c"): 0}


def test_label_counts_follow_the_label_order_and_include_zeros():
    assert label_counts([record(1), record(3)], ("A", "B", "C")) == {"A": 0, "B": 2, "C": 0}


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=60),
    sizes=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=4),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_size_pools_are_disjoint_and_exactly_sized_whenever_they_fit(n, sizes, seed):
    rows = shuffle_records([record(i) for i in range(n)], seed)
    pools = {f"p{i}": PoolSpec("s", size=size) for i, size in enumerate(sizes)}
    if sum(sizes) > n:
        with pytest.raises(DataError, match="asks for"):
            select_pools(rows, pools, {}, "s")
        return

    drawn = select_pools(rows, pools, {}, "s")

    assert [len(drawn[name]) for name in pools] == sizes
    assert set(pool_overlaps(drawn, record_id).values()) <= {0}


# --- through load_pools ----------------------------------------------------------------------


def test_same_seed_gives_the_same_pools(medmcqa_spec):
    first, second = load_pools(medmcqa_spec()), load_pools(medmcqa_spec())

    assert {k: ids(v) for k, v in first.items()} == {k: ids(v) for k, v in second.items()}


def test_another_seed_gives_other_pools(medmcqa_spec):
    first, second = load_pools(medmcqa_spec(seed=1)), load_pools(medmcqa_spec(seed=2))

    assert ids(first["eval"]) != ids(second["eval"])


def test_pools_are_disjoint_and_sized_as_declared(medmcqa_spec):
    pools = load_pools(medmcqa_spec())

    assert {name: len(records) for name, records in pools.items()} == {
        "eval": 10,
        "sft": 10,
        "grpo": 10,
    }
    all_ids = [r.id for records in pools.values() for r in records]
    assert len(set(all_ids)) == 30
    assert pools.summary.max_overlap == 0


def test_limit_shrinks_every_pool_including_an_ids_file_pool(data_dir):
    rows = [pubmedqa_row(100 + i, ("yes", "no", "maybe")[i % 3]) for i in range(30)]
    write_rows(data_dir / "pubmedqa" / "pqa.jsonl.gz", rows)
    test_ids = {str(100 + i): "yes" for i in range(12)}
    ids_file = write_json(data_dir / "pubmedqa" / "test.json", test_ids)
    pools = {
        "eval": {"split": "train", "ids_file": ids_file, "limit": 4},
        "sft": {"split": "train", "size": 10, "limit": 3},
        "grpo": {"split": "train", "size": None, "limit": 5},
    }
    spec = make_spec("pubmedqa", data_dir / "pubmedqa", {"train": "pqa.jsonl.gz"}, pools)

    loaded = load_pools(spec)

    assert {name: len(records) for name, records in loaded.items()} == {
        "eval": 4,
        "sft": 3,
        "grpo": 5,
    }
    assert {r.id for r in loaded["eval"]} <= set(test_ids)
    assert loaded.summary.pool("grpo").drawn == 8  # 30 rows - 12 ids - 10 sft


def test_ids_file_pool_holds_exactly_the_listed_ids(data_dir):
    write_rows(data_dir / "pubmedqa" / "pqa.jsonl", [pubmedqa_row(100 + i) for i in range(20)])
    ids_file = write_json(data_dir / "pubmedqa" / "ids.json", ["105", "111", "117"])
    pools = {"eval": {"split": "train", "ids_file": ids_file}, "rest": {"split": "train"}}
    spec = make_spec("pubmedqa", data_dir / "pubmedqa", {"train": "pqa.jsonl"}, pools)

    loaded = load_pools(spec)

    assert sorted(ids(loaded["eval"])) == ["105", "111", "117"]
    assert len(loaded["rest"]) == 17


def test_ids_file_listing_an_id_the_split_lacks_is_an_error(data_dir):
    write_rows(data_dir / "pubmedqa" / "pqa.jsonl", [pubmedqa_row(100 + i) for i in range(5)])
    ids_file = write_json(data_dir / "pubmedqa" / "ids.json", ["101", "999"])
    pools = {"eval": {"split": "train", "ids_file": ids_file}}
    spec = make_spec("pubmedqa", data_dir / "pubmedqa", {"train": "pqa.jsonl"}, pools)

    with pytest.raises(DataError, match=r"pool 'eval': 1 of the 2 ids .*'999'"):
        load_pools(spec)


def test_dedup_against_eval_is_reported_in_the_summary(data_dir):
    rows = [medmcqa_row(i) for i in range(10)]
    rows += [
        medmcqa_row(10 + i, question=r["question"].upper().rstrip("?")) for i, r in enumerate(rows)
    ]  # each question again, in capitals and without the '?'
    write_rows(data_dir / "medmcqa" / "validation.jsonl.gz", rows)
    pools = {"eval": {"split": "validation", "size": 10}, "sft": {"split": "validation"}}
    spec = make_spec("medmcqa", data_dir / "medmcqa", {"validation": "validation.jsonl.gz"}, pools)

    loaded = load_pools(spec)

    summary = loaded.summary.pool("sft")
    assert summary.drawn == 10
    assert summary.dedup_removed + summary.size == 10
    assert summary.dedup_removed > 0
    assert loaded.summary.overlap_by_text[("eval", "sft")] == 0


def test_too_large_pool_is_an_error_naming_the_pool(medmcqa_spec):
    spec = medmcqa_spec(
        {"eval": {"split": "validation", "size": 30}, "sft": {"split": "train", "size": 11}}
    )

    with pytest.raises(DataError, match=r"pool 'sft' asks for 11 rows .* only 10 of its 40"):
        load_pools(spec)


def test_split_alias_shares_one_shuffle_and_is_reported(medmcqa_spec):
    loaded = load_pools(medmcqa_spec())

    assert [s.split for s in loaded.summary.splits] == ["validation"]
    assert loaded.summary.pool("sft").source_split == "validation"
    assert loaded.summary.notes == (
        "MedMCQA train split is not available locally; pools are cut from validation "
        "(pools: sft, grpo)",
    )


def test_split_alias_logs_a_warning(medmcqa_spec, caplog):
    load_pools(medmcqa_spec())

    assert any(
        r.levelname == "WARNING" and "train split is not available locally" in r.getMessage()
        for r in caplog.records
    )


def test_summary_reports_source_splits_and_pool_labels(medmcqa_spec, medmcqa_dir):
    summary = load_pools(medmcqa_spec()).summary

    assert (summary.source, summary.location) == ("local", str(medmcqa_dir.resolve()))
    assert summary.split("validation").labels == {"A": 10, "B": 10, "C": 10, "D": 10}
    assert sum(summary.pool("eval").labels.values()) == 10
    assert summary.dedup_removed == 0 and summary.skipped == {}
