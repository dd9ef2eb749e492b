"""A DataLoader that Lightning can resume mid-epoch.

Lightning saves `state_dict()` of every train loader that has one in its checkpoints and calls
`load_state_dict()` before iterating again; a plain DataLoader has neither, so a resumed run
would restart the epoch and see its first batches twice. This loader's order is a function of
(seed, epoch) alone, and its state is (epoch, batches handed out): a resumed run skips exactly
the batches the killed run had trained on.

Batches are counted where the loader hands them out, not where the sampler draws indices:
worker processes prefetch, so the sampler runs ahead of training. Lightning does not prefetch
from a loader with a length, so a checkpoint taken after batch i says i + 1 batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[int]):
    """Indices 0..n-1, shuffled by (seed, epoch) or in order, starting at `start`."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0  # indices of this epoch to skip (set by a resume), used once

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        yield from self.order(self.epoch)[start:]

    def __len__(self) -> int:
        return self.size  # the whole epoch: Lightning counts resumed batches itself


class ResumableDataLoader(DataLoader):
    """A DataLoader over `dataset` in (seed, epoch)-determined order with a resumable position.

    Keyword arguments other than the sampler's go to DataLoader (collate_fn, num_workers...).
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        **kwargs: Any,
    ) -> None:
        sampler = EpochSampler(len(dataset), seed, shuffle)
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
