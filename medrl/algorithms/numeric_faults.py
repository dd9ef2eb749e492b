"""Numeric faults: a non-finite loss or gradient skips the update instead of ruining the run.

A skipped update drops every gradient before the optimizer step, so AdamW leaves the weights
and its moments untouched (it skips parameters without a gradient); the scheduler and the
step counters still advance, as with a skipped step under AMP's loss scaling, so step numbers,
checkpoints and schedules stay aligned with an unfaulted run. Faults are logged and counted;
`max_consecutive` faulty updates in a row stop the run (a learning rate that blew the weights
up, a reward returning NaN) after a training-state checkpoint of the last good weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from medrl.sharding import local_gradient_norm
from medrl.utils.config import defaults_from_config
from medrl.utils.settings import SettingsBlock, count_rule

log = logging.getLogger(__name__)


class NumericFaultError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


@dataclass(frozen=True)
@defaults_from_config("train", "numeric_faults")
class NumericFaultSettings(SettingsBlock):
    """The `numeric_faults` block (conf/train.yaml, which holds its default), read by the SFT
    and GRPO stages."""

    BLOCK = "numeric_faults"
    RULES = (
        (
            "max_consecutive",
            *count_rule(1, "skipped updates in a row before the run stops"),
        ),
    )

    max_consecutive: int


class FaultCounter:
    """Counts skipped updates; `stop_reason` is set once `max_consecutive` happen in a row."""

    def __init__(self, max_consecutive: int) -> None:
        NumericFaultSettings(max_consecutive=max_consecutive)  # checks it, naming the key
        self.max_consecutive = max_consecutive
        self.total = 0
        self.consecutive = 0
        self.stop_reason: str | None = None

    def record(self, fault: str | None, where: str) -> None:
        """Record one update: `fault` describes what was non-finite, None for a clean update."""
        if fault is None:
            self.consecutive = 0
            return
        self.total += 1
        self.consecutive += 1
        log.warning(
            "%s: %s; update skipped (%s in a row, %s in total)",
            where,
            fault,
            self.consecutive,
            self.total,
        )
        if self.consecutive >= self.max_consecutive:
            self.stop_reason = (
                f"{self.consecutive} updates in a row had a non-finite loss or gradient "
                f"(the last at {where}: {fault}); numeric_faults.max_consecutive="
                f"{self.max_consecutive}. Lower the learning rate, check the rewards, or use "
                "fp32/bf16 instead of fp16."
            )

    def state(self) -> dict[str, int]:
        return {"total": self.total, "consecutive": self.consecutive}

    def load(self, state: dict[str, int]) -> None:
        self.total, self.consecutive = int(state["total"]), int(state["consecutive"])


def update_fault(
    losses: Iterable[float], model: nn.Module, grad_norm: float | None = None
) -> str | None:
    """What is non-finite in this update (the losses or the gradients), or None.

    A non-finite gradient makes the total norm non-finite, so one norm (`grad_norm` when the
    caller has it already) settles the common case with one device sync; the per-tensor scan
    that names the culprit runs only when the norm is not finite.
    """
    bad_losses = [value for value in losses if not math.isfinite(value)]
    if bad_losses:
        return f"non-finite loss {bad_losses[0]}"
    if math.isfinite(local_gradient_norm(model) if grad_norm is None else grad_norm):
        return None
    bad = [name for name, p in model.named_parameters() if _nonfinite(p.grad)]
    if bad:
        return f"non-finite gradient in {len(bad)} tensors (first: {bad[0]})"
    return None  # finite gradients whose squared norm overflowed: not a fault


def stepped_update_fault(losses: Iterable[float], grad_norm: float) -> str | None:
    """What was non-finite in an update that the strategy checked at its own step (DeepSpeed:
    it skips an update whose gradient norm over every partition is not finite, and reports
    that norm as inf), or None. Its gradients are partitioned, so no tensor can be named.
    A non-finite loss whose gradients were all finite is counted, but DeepSpeed applied it."""
    bad_losses = [value for value in losses if not math.isfinite(value)]
    if bad_losses:
        return f"non-finite loss {bad_losses[0]}"
    if not math.isfinite(grad_norm):
        return f"non-finite gradient norm {grad_norm} (DeepSpeed skipped the update)"
    return None


def drop_gradients(model: nn.Module) -> None:
    """Make the next optimizer step a no-op for every parameter."""
    for param in model.parameters():
        param.grad = None


def _nonfinite(grad: torch.Tensor | None) -> bool:
    return grad is not None and not bool(torch.isfinite(grad).all())
