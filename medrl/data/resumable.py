"""A DataLoader that Lightning can resume mid-epoch.

Lightning saves `state_dict()` of every train loader that has one in its checkpoints and calls
`load_state_dict()` before iterating again; a plain DataLoader has neither, so a resumed run
would restart the epoch and see its first batches twice. This loader's order is a function of
(seed, epoch) alone, and its state is (epoch, batches handed out): a resumed run skips exactly
the batches the killed run had trained on.

Batches are counted where the loader hands them out, not where the sampler draws indices:
worker processes prefetch, so the sampler runs ahead of training. Lightning does not prefetch
from a loader with a length, so a checkpoint taken after batch i says i + 1 batches.

On several processes (`world_size` > 1) every rank computes the same order, cuts it into the
global batches a single process would train on, and takes its contiguous part of each:
together the ranks see exactly the single-process batches. An incomplete last global batch is
split as evenly as it goes; if it is too small to give every rank an item, it is dropped, so
that every rank makes the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[int]):
    """Indices 0..n-1, shuffled by (seed, epoch) or in order, starting at `start`.

    With world_size > 1: this rank's share, `rank_batch` indices out of every global batch of
    rank_batch * world_size; of an incomplete last global batch, its part of an even split
    (nothing when it holds fewer items than there are ranks: it is dropped).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool,
        rank_batch: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.rank_batch, self.rank, self.world_size = rank_batch, rank, world_size
        self.epoch = 0
        self.start = 0  # indices of this epoch to skip (set by a resume), used once

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """The epoch's order over the whole dataset (the same on every rank)."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def rank_order(self, epoch: int) -> list[int]:
        """This rank's indices of the epoch, in order."""
        order = self.order(epoch)
        if self.world_size == 1:
            return order
        width = self.rank_batch * self.world_size  # one global batch
        mine = []
        for start in range(0, len(order), width):
            mine.extend(self._part(order[start : start + width]))
        return mine

    def _part(self, batch: list[int]) -> list[int]:
        """This rank's contiguous part of one global batch, split as evenly as possible."""
        if len(batch) < self.world_size:
            return []  # not one item per rank: dropped on every rank
        size, extra = divmod(len(batch), self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return batch[start : start + size + (self.rank < extra)]

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        yield from self.rank_order(self.epoch)[start:]

    def __len__(self) -> int:
        # The whole epoch: Lightning counts resumed batches itself.
        if self.world_size == 1:
            return self.size
        return len(self.rank_order(self.epoch))


class ResumableDataLoader(DataLoader):
    """A DataLoader over `dataset` in (seed, epoch)-determined order with a resumable position.

    batch_size is this process's; with world_size > 1 the loader yields this rank's part of
    the global batches of batch_size * world_size (see the module docstring).
    Keyword arguments other than the sampler's go to DataLoader (collate_fn, num_workers...).
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        **kwargs: Any,
    ) -> None:
        if world_size > 1 and kwargs.get("drop_last"):
            # The last global batch may split unevenly: dropping each rank's short batch would
            # give the ranks different numbers of steps (DDP then waits forever).
            raise ValueError("ResumableDataLoader: drop_last=True needs world_size=1")
        sampler = EpochSampler(len(dataset), seed, shuffle, batch_size, rank, world_size)
        # The generator only seeds worker processes; the DataLoader would otherwise draw that
        # seed from the global RNG, which a resumed run would then see one draw later.
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.batches_handed_out = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        skip = 0
        if self._resume is not None and self._resume["epoch"] == sampler.epoch:
            skip = self._resume["batches"]
        self._resume = None
        sampler.start = skip * self.batch_size
        self.batches_handed_out = skip
        for batch in super().__iter__():
            self.batches_handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch = self.sampler.epoch  # type: ignore[attr-defined]
        return {"epoch": epoch, "batches": self.batches_handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Skip `state["batches"]` batches the next time epoch `state["epoch"]` is iterated.

        A checkpoint taken at the end of an epoch resumes into the next epoch, whose order
        starts from the beginning: the skip applies only to the epoch it was recorded in.
        """
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
