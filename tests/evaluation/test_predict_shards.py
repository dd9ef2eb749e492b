"""Sharded evaluation: the shards of `predict` on several ranks, put together by `merge_shards`,
are exactly the predictions of one process, greedy or sampled.

- every rank runs its own batches and returns only their records' predictions; the shards are
  disjoint and together cover every record;
- merge_shards puts them back in record order with each record's samples 0..k-1, and refuses
  records with duplicate ids or without a prediction;
- a shard rank outside [0, world_size) is refused.
"""

from __future__ import annotations

import dataclasses

import pytest

from medrl.data.records import QARecord
from medrl.evaluation import Prediction, merge_shards, predict
from medrl.prompts import XmlFormat
from medrl.rollout import SamplingSettings

# Question lengths are not monotone in record order, so length-sorted batches mix records from
# all over the list and a shard's records are not a contiguous slice.
QUESTIONS = [
    "Which vitamin deficiency causes scurvy in sailors on long voyages without fresh fruit?",
    "Is aspirin an NSAID?",
    "Which nerve supplies the deltoid?",
    "Does early mobilisation after abdominal surgery shorten the hospital stay of elderly "
    "patients compared with bed rest?",
    "Is insulin a hormone?",
    "Which organ produces bile, and where is it stored between meals?",
    "Is the femur a bone?",
]
RECORDS = [
    QARecord(
        id=f"q{i}",
        question=question,
        options={"A": "yes", "B": "no", "C": "maybe"},
        answer="ABC"[i % 3],
        subject=f"subject {i % 2}",
    )
    for i, question in enumerate(QUESTIONS)
]
BATCH_SIZE = 2  # 7 records -> 4 batches
GREEDY = SamplingSettings(greedy=True, max_new_tokens=4)
SAMPLED = SamplingSettings(temperature=1.0, max_new_tokens=4)
MODES = {
    "greedy": {"settings": GREEDY, "num_samples": 1, "seed": None},
    "sampled": {"settings": SAMPLED, "num_samples": 2, "seed": 23},
}


def run_predict(policy, mode: str, shard=(0, 1), records=RECORDS) -> list[Prediction]:
    return predict(
        policy.model,
        policy.tokenizer,
        records,
        XmlFormat(),
        policy.chat_template_kwargs,
        MODES[mode]["settings"],
        batch_size=BATCH_SIZE,
        num_samples=MODES[mode]["num_samples"],
        seed=MODES[mode]["seed"],
        shard=shard,
    )


def record_ids(predictions: list[Prediction]) -> list[str]:
    """Ids in order of first appearance."""
    return list(dict.fromkeys(p.id for p in predictions))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("world_size", [2, 3])
def test_merged_shards_equal_the_one_process_predictions(tiny_policy, world_size, mode):
    """merge_shards of every rank's predict is the unsharded predict, prediction for prediction
    (prompt, completion, scores, sample number): batches and their seeds do not move."""
    whole = run_predict(tiny_policy, mode)
    shards = [
        run_predict(tiny_policy, mode, shard=(rank, world_size)) for rank in range(world_size)
    ]

    samples = MODES[mode]["num_samples"]
    assert len(whole) == len(RECORDS) * samples
    assert merge_shards(shards, RECORDS) == whole
    if mode == "sampled":
        assert any(
            whole[2 * i].completion != whole[2 * i + 1].completion for i in range(len(RECORDS))
        ), "the two samples of a record are real draws, not copies"


@pytest.mark.parametrize("world_size", [2, 3])
def test_each_shard_holds_some_records_and_the_shards_are_disjoint(tiny_policy, world_size):
    """A rank's shard holds all samples of some records, in record order; no record is in two
    shards, and together they hold every record."""
    shards = [run_predict(tiny_policy, "sampled", shard=(r, world_size)) for r in range(world_size)]
    order = [record.id for record in RECORDS]

    owners: dict[str, int] = {}
    for rank, shard in enumerate(shards):
        ids = record_ids(shard)
        assert 0 < len(ids) < len(RECORDS), f"rank {rank} holds some records, not all"
        assert ids == sorted(ids, key=order.index), "a shard keeps record order"
        assert [(p.id, p.sample) for p in shard] == [(i, s) for i in ids for s in range(2)]
        for record_id in ids:
            assert record_id not in owners, f"{record_id} is in shards {owners.get(record_id)}"
            owners[record_id] = rank
    assert sorted(owners) == sorted(order)


def test_a_rank_without_a_batch_returns_nothing_and_the_merge_is_still_complete(tiny_policy):
    """7 records in batches of 2 make 4 batches: on 5 ranks, rank 4 has none."""
    shards = [run_predict(tiny_policy, "greedy", shard=(r, 5)) for r in range(5)]

    assert shards[4] == []
    assert all(shards[r] for r in range(4))
    assert merge_shards(shards, RECORDS) == run_predict(tiny_policy, "greedy")


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0), (3, 1)])
def test_predict_refuses_a_shard_rank_outside_the_world(tiny_policy, rank, world_size):
    with pytest.raises(ValueError, match="shard rank"):
        run_predict(tiny_policy, "greedy", shard=(rank, world_size))


# --- merge_shards on hand-built predictions ---------------------------------------------------


def samples_of(make_pred, record: QARecord, k: int) -> list[Prediction]:
    base = make_pred(record.id, record.answer, record.answer)
    return [dataclasses.replace(base, sample=s, completion=f"{record.id}/{s}") for s in range(k)]


def test_merge_puts_records_in_order_and_samples_in_sample_order(make_pred):
    """Whatever the order of shards and of predictions within them, the merge follows `records`
    and numbers each record's samples 0..k-1."""
    preds = {r.id: samples_of(make_pred, r, 3) for r in RECORDS[:4]}
    shards = [
        [preds["q2"][2], preds["q0"][1], preds["q2"][0]],
        [preds["q3"][1], preds["q3"][0], preds["q3"][2], preds["q2"][1]],
        [preds["q1"][0], preds["q0"][2], preds["q1"][2], preds["q1"][1], preds["q0"][0]],
    ]

    merged = merge_shards(shards, RECORDS[:4])

    assert merged == [p for r in RECORDS[:4] for p in preds[r.id]]


def test_merge_refuses_a_record_without_a_prediction(make_pred):
    preds = [samples_of(make_pred, r, 1) for r in RECORDS[:3]]
    with pytest.raises(ValueError, match="q1"):
        merge_shards([preds[0], preds[2]], RECORDS[:3])
    with pytest.raises(ValueError):
        merge_shards([], RECORDS[:1])


def test_merge_refuses_records_with_duplicate_ids(make_pred):
    preds = [samples_of(make_pred, r, 1) for r in RECORDS[:2]]
    twin = dataclasses.replace(RECORDS[1], question="Another question with the same id?")
    with pytest.raises(ValueError, match="unique"):
        merge_shards(preds, [RECORDS[0], RECORDS[1], twin])


def test_merge_of_no_records_is_empty():
    assert merge_shards([[], []], []) == []


def test_merge_refuses_repeated_shards_and_strangers():
    """A shard passed twice, or predictions of records not being merged, are errors."""
    from medrl.evaluation import make_prediction

    preds = [make_prediction(r, "p", "c", XmlFormat(), 1, False) for r in RECORDS]
    with pytest.raises(ValueError, match="a shard is repeated or incomplete"):
        merge_shards([preds, preds[:1]], RECORDS)
    with pytest.raises(ValueError, match="not being merged"):
        merge_shards([preds], RECORDS[1:])
