"""Swap a module's forward for a block, on the instance, leaving the class alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def instance_forwards(
    model: nn.Module,
    selects: Callable[[nn.Module], bool],
    forward_of: Callable[[nn.Module], Callable],
) -> Iterator[int]:
    """Inside the block every module of `model` that `selects` picks runs `forward_of(module)`
    (yields how many). A module whose forward is already replaced on the instance (by
    accelerate's hooks, or an enclosing swap) is left alone; every swapped module's own
    forward is back on exit, also when the block raises."""
    swapped = [m for m in model.modules() if selects(m) and "forward" not in vars(m)]
    try:
        for module in swapped:
            module.forward = forward_of(module)  # an instance attribute, removed below
        yield len(swapped)
    finally:
        for module in swapped:
            module.__dict__.pop("forward", None)
