"""Sharded resumable loading: the ranks of a multi-process run together see exactly the batches
one process would train on, step together, and resume where they stopped.

- concatenating every rank's j-th batch, rank 0 first, gives the single process's j-th global
  batch of rank_batch * world_size items;
- an incomplete last global batch is split as evenly as possible, or dropped on every rank when
  it holds fewer items than there are ranks, so that every rank makes the same number of steps;
- world_size=1 is the unsharded order; a rank outside [0, world_size) is refused;
- a resumed sharded loader skips exactly this rank's first k batches.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrl.data.resumable import EpochSampler, ResumableDataLoader

SEED = 17

# (dataset size, rank batch, world size): full global batches only, a dropped tail (fewer items
# than ranks), and an uneven tail (at least one item per rank).
COMBOS = [
    (12, 2, 2),  # 3 full global batches
    (13, 2, 2),  # tail of 1 < 2 ranks: dropped
    (7, 3, 2),  # tail of 1: dropped
    (10, 1, 4),  # tail of 2 < 4 ranks: dropped
    (9, 3, 3),  # exactly one global batch
    (11, 2, 2),  # tail of 3: split 2 + 1
    (16, 3, 3),  # tail of 7: split 3 + 2 + 2
    (15, 4, 3),  # tail of 3: one item each
]
UNEVEN_TAILS = [(11, 2, 2), (16, 3, 3), (15, 4, 3), (17, 4, 3), (14, 4, 2)]


def loader(size, batch, rank=0, world=1, shuffle=True, seed=SEED) -> ResumableDataLoader:
    return ResumableDataLoader(
        list(range(size)),
        batch_size=batch,
        seed=seed,
        shuffle=shuffle,
        rank=rank,
        world_size=world,
    )


def batches(data_loader) -> list[list[int]]:
    """The loader's batches (default collate: tensors) as lists of dataset indices."""
    return [batch.tolist() for batch in data_loader]


def rank_batches(size, rank_batch, world, shuffle=True, epoch=0) -> list[list[list[int]]]:
    """[rank][j] -> rank's j-th batch of `epoch`."""
    loaders = [loader(size, rank_batch, r, world, shuffle) for r in range(world)]
    for each in loaders:
        each.sampler.set_epoch(epoch)
    return [batches(each) for each in loaders]


def global_batches(size, rank_batch, world, shuffle=True, epoch=0) -> list[list[int]]:
    """What one process with batch_size = rank_batch * world_size trains on in `epoch`."""
    single = loader(size, rank_batch * world, shuffle=shuffle)
    single.sampler.set_epoch(epoch)
    return batches(single)


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "in-order"])
@pytest.mark.parametrize(("size", "rank_batch", "world"), COMBOS)
def test_ranks_together_see_exactly_the_single_process_global_batches(
    size, rank_batch, world, shuffle
):
    """Rank 0's j-th batch, then rank 1's, ... is the single process's j-th batch, item for item;
    a last global batch with fewer items than ranks is dropped by every rank."""
    single = global_batches(size, rank_batch, world, shuffle)
    per_rank = rank_batches(size, rank_batch, world, shuffle)

    kept = [batch for batch in single if len(batch) >= world]
    assert len(kept) >= len(single) - 1, "only the last global batch can be dropped"
    for rank in range(world):
        assert len(per_rank[rank]) == len(kept), f"rank {rank} steps as often as the others"
    for j, expected in enumerate(kept):
        assert [i for rank in range(world) for i in per_rank[rank][j]] == expected
    seen = [i for rank in range(world) for batch in per_rank[rank] for i in batch]
    assert len(seen) == len(set(seen)), "no item is seen twice in an epoch"
    assert sorted(seen) == sorted(i for batch in kept for i in batch)


@pytest.mark.parametrize("epoch", [1, 4])
def test_ranks_follow_the_single_process_in_later_epochs_too(epoch):
    """set_epoch reshuffles every rank alike: later epochs are a different order, still split
    exactly as the single process's batches."""
    size, rank_batch, world = 16, 3, 3
    single = global_batches(size, rank_batch, world, epoch=epoch)
    per_rank = rank_batches(size, rank_batch, world, epoch=epoch)

    assert single != global_batches(size, rank_batch, world, epoch=0), "the epoch reshuffles"
    for j, expected in enumerate(single):
        assert [i for rank in range(world) for i in per_rank[rank][j]] == expected


def test_a_tail_with_fewer_items_than_ranks_is_dropped_on_every_rank():
    """13 items, 2 per rank on 2 ranks: three global batches of 4, and the 13th item of the
    epoch's order is seen by no rank."""
    per_rank = rank_batches(13, 2, 2)
    last = EpochSampler(13, SEED, True).order(0)[-1]

    assert [len(b) for b in per_rank[0]] == [len(b) for b in per_rank[1]] == [2, 2, 2]
    assert all(last not in batch for rank in per_rank for batch in rank)


@pytest.mark.parametrize(("size", "rank_batch", "world"), COMBOS)
def test_every_rank_steps_equally_often_and_len_counts_what_it_yields(size, rank_batch, world):
    """All ranks have the same number of batches (DDP ranks step together); len(sampler) is the
    number of indices it yields and len(loader) the number of batches."""
    counts = set()
    for rank in range(world):
        data_loader = loader(size, rank_batch, rank, world)
        sampler = data_loader.sampler
        indices = list(sampler)
        assert len(sampler) == len(indices)
        assert indices == sampler.rank_order(0)
        got = batches(data_loader)
        assert len(data_loader) == len(got)
        assert all(1 <= len(batch) <= rank_batch for batch in got)
        counts.add(len(got))
    assert len(counts) == 1, counts


@pytest.mark.parametrize(("size", "rank_batch", "world"), UNEVEN_TAILS)
def test_an_incomplete_global_batch_is_split_as_evenly_as_possible(size, rank_batch, world):
    """A tail of at least world_size items gives every rank a part; part sizes differ by <= 1."""
    tail = size % (rank_batch * world)
    assert tail >= world, "the combo has an incomplete global batch that is kept"
    per_rank = rank_batches(size, rank_batch, world)

    last_sizes = [len(per_rank[rank][-1]) for rank in range(world)]
    assert sum(last_sizes) == tail
    assert max(last_sizes) - min(last_sizes) <= 1, last_sizes
    assert min(last_sizes) >= 1


@pytest.mark.parametrize(("rank", "world"), [(-1, 2), (2, 2), (5, 3), (0, 0)])
def test_a_rank_outside_the_world_is_refused(rank, world):
    """rank must lie in [0, world_size), for the sampler and for the loader."""
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(10, SEED, True, rank_batch=2, rank=rank, world_size=world)
    with pytest.raises(ValueError, match="rank"):
        loader(10, 2, rank, world)


@pytest.mark.parametrize("shuffle", [True, False])
def test_one_process_is_the_unsharded_order(shuffle):
    """world_size=1: rank_order is order (rank_batch plays no part), len is the dataset size, and
    an incomplete last batch is kept however small it is."""
    for rank_batch in (1, 3, 4):
        sampler = EpochSampler(13, SEED, shuffle, rank_batch=rank_batch)
        for epoch in (0, 1, 2):
            assert sampler.rank_order(epoch) == sampler.order(epoch)
            assert sorted(sampler.order(epoch)) == list(range(13))
        assert len(sampler) == 13
        assert list(sampler) == sampler.order(0)
    if not shuffle:
        assert EpochSampler(13, SEED, False).order(3) == list(range(13))

    got = batches(loader(13, 4, shuffle=shuffle))
    order = EpochSampler(13, SEED, shuffle).order(0)
    assert got == [order[0:4], order[4:8], order[8:12], order[12:13]]


@pytest.mark.parametrize(("size", "rank_batch", "world"), [(16, 3, 3), (13, 2, 2), (10, 1, 4)])
def test_resuming_a_sharded_loader_skips_exactly_this_ranks_first_batches(size, rank_batch, world):
    """load_state_dict({"epoch": 0, "batches": k}) on rank r yields rank r's batches k, k+1, ...
    of the epoch, and its state then counts all of them."""
    for rank in range(world):
        full = batches(loader(size, rank_batch, rank, world))
        for k in range(len(full) + 1):
            resumed = loader(size, rank_batch, rank, world)
            resumed.load_state_dict({"epoch": 0, "batches": k})
            assert batches(resumed) == full[k:], (rank, k)
            assert resumed.state_dict() == {"epoch": 0, "batches": len(full)}
            assert batches(resumed) == full, "the skip is used once"


def test_a_resume_applies_only_to_the_epoch_it_was_recorded_in():
    """A state from epoch 0 does not skip anything of epoch 1; a state from epoch 1 does."""
    full_epoch1 = rank_batches(16, 3, 3, epoch=1)[1]

    stale = loader(16, 3, rank=1, world=3)
    stale.load_state_dict({"epoch": 0, "batches": 1})
    stale.sampler.set_epoch(1)
    assert batches(stale) == full_epoch1

    current = loader(16, 3, rank=1, world=3)
    current.load_state_dict({"epoch": 1, "batches": 1})
    current.sampler.set_epoch(1)
    assert batches(current) == full_epoch1[1:]


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=40),
    rank_batch=st.integers(min_value=1, max_value=5),
    world=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    epoch=st.integers(min_value=0, max_value=3),
)
def test_rank_orders_cut_into_rank_batches_rebuild_the_global_batches(
    size, rank_batch, world, seed, epoch
):
    """For any sizes: chunking each rank's order by rank_batch and concatenating the j-th
    chunks rank by rank gives the j-th global chunk of order(epoch), for every global chunk with
    at least world_size items; all ranks have the same number of chunks."""
    samplers = [EpochSampler(size, seed, True, rank_batch, r, world) for r in range(world)]
    order = samplers[0].order(epoch)
    width = rank_batch * world
    expected = [order[s : s + width] for s in range(0, size, width)]
    expected = [batch for batch in expected if len(batch) >= world]

    chunks = []
    for sampler in samplers:
        mine = sampler.rank_order(epoch)
        assert sampler.order(epoch) == order, "every rank computes the same order"
        chunks.append([mine[s : s + rank_batch] for s in range(0, len(mine), rank_batch)])
    for rank_chunks in chunks:
        assert len(rank_chunks) == len(expected)
    for j, batch in enumerate(expected):
        assert [i for rank_chunks in chunks for i in rank_chunks[j]] == batch


def test_drop_last_is_refused_on_several_ranks():
    """An uneven last global batch would make drop_last drop a batch on some ranks only."""
    with pytest.raises(ValueError, match="drop_last=True needs world_size=1"):
        ResumableDataLoader(
            list(range(11)), batch_size=2, seed=0, rank=0, world_size=3, drop_last=True
        )
