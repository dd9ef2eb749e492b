"""Which float32 Linear kernel a CPU run uses, decided by timing both on the run's own shapes.

torch runs a float32 ``F.linear`` on a CPU with MKL's sgemm; medrl can route it through oneDNN
instead (medrl.rollout.onednn_linear). Which is faster depends on the CPU, not on its vendor:
on an AMD EPYC (Zen 5) MKL took its generic code path and oneDNN was twice as fast, while on an
Intel Xeon with AMX MKL ran its AVX-512 path and the oneDNN route made the GRPO step slower
(experiments/performance/). With `engine.cpu_linear: auto` the engine times both, once per
process for each (weights, row count, threads) it meets, and takes the faster:

- sampling: the forward products of one decode step (rows = the rollout's B*G rows);
- passes: the forward products and the input-gradient products of the backward at
  PASS_ROWS rows (GRPO's log-prob passes and update, SFT's forward and backward).

Every distinct weight shape of the model's float32 Linears is timed once, with the model's own
weights (no copies), weighted by how many Linears have it; each side's time is the best of
REPEATS after a warm-up call. Both kernels compute the same products (float32, no reduced
precision; results equal to rounding), so the choice changes speed only. The decision and its
figures are logged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medrl.rollout.onednn_linear import _matmul, onednn_linear_supported
from medrl.sharding import weights_sharded

log = logging.getLogger(__name__)

PASS_ROWS = 256  # rows of a log-prob / update / SFT product: a packed micro-batch's order
REPEATS = 3


@dataclass(frozen=True)
class LinearTiming:
    """Seconds of one round of the model's float32 Linear products in each kernel."""

    phase: str  # sampling | passes
    rows: int
    torch_seconds: float
    onednn_seconds: float

    @property
    def onednn_wins(self) -> bool:
        return self.onednn_seconds < self.torch_seconds

    def describe(self) -> str:
        winner = "onednn" if self.onednn_wins else "torch"
        return (
            f"cpu_linear=auto, {self.phase} ({self.rows} rows): {winner} "
            f"(torch/MKL {1000 * self.torch_seconds:.2f} ms, "
            f"oneDNN {1000 * self.onednn_seconds:.2f} ms per round of the model's Linears)"
        )


def float32_linear_weights(model: nn.Module) -> dict[tuple[int, int], tuple[torch.Tensor, int]]:
    """{(out, in): (one weight of that shape, how many plain float32 nn.Linear weights have
    it)}, over the Linears onednn_linears would route (LoRA's A and B included)."""
    found: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}
    counts: Counter[tuple[int, int]] = Counter()
    seen: set[int] = set()
    for module in model.modules():
        if type(module) is not nn.Linear or module.weight.dtype != torch.float32:
            continue
        weight = module.weight
        # A sharded weight (FSDP's flat shard, 1-D) is not a product anyone routes.
        if id(weight) in seen or weight.device.type != "cpu" or weight.dim() != 2:
            continue
        seen.add(id(weight))
        shape = (weight.shape[0], weight.shape[1])
        counts[shape] += 1
        found.setdefault(shape, (weight.detach(), 0))
    return {shape: (weight, counts[shape]) for shape, (weight, _) in found.items()}


def _best_seconds(run: Callable[[], None], repeats: int = REPEATS) -> float:
    run()  # warm-up: builds the kernel for this shape
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def time_linears(
    weights: dict[tuple[int, int], tuple[torch.Tensor, int]], rows: int, backward: bool
) -> tuple[float, float]:
    """(torch seconds, oneDNN seconds) of one round of products: for every shape, `count`
    times the forward x [rows, in] @ W^T and, with `backward`, the input gradient
    g [rows, out] @ W (what each kernel runs for a Linear whose input needs a gradient)."""
    generator = torch.Generator().manual_seed(0)
    torch_total = onednn_total = 0.0
    with torch.no_grad():
        for (out_features, in_features), (weight, count) in weights.items():
            x = torch.randn(rows, in_features, generator=generator)
            products = [(x, weight)]
            if backward:
                products.append((torch.randn(rows, out_features, generator=generator), weight.t()))
            for inputs, matrix in products:
                torch_total += count * _best_seconds(
                    lambda i=inputs, m=matrix: nn.functional.linear(i, m)
                )
                onednn_total += count * _best_seconds(
                    lambda i=inputs, m=matrix: _matmul(i, m, None)
                )
    return torch_total, onednn_total


class LinearChooser:
    """cpu_linear=auto: whether to route float32 Linears through oneDNN, per phase, decided
    by `time_linears` once per (phase, weight shapes, rows, threads) in this process."""

    def __init__(self) -> None:
        self.decisions: dict[tuple, LinearTiming] = {}

    def onednn_wins(self, model: nn.Module, phase: str, rows: int) -> bool:
        """True when oneDNN ran `model`'s float32 Linear products faster at `rows` rows
        (sampling: forwards; passes: forwards and input gradients); False when the model has
        no float32 Linear, the build lacks the op or the weights are sharded across processes
        (onednn_linears routes nothing then). Each process of a distributed run decides for
        itself: both kernels compute the same float32 products, so ranks that chose differently
        differ only by rounding."""
        if not onednn_linear_supported() or weights_sharded(model):
            return False
        weights = float32_linear_weights(model)
        if not weights:
            return False
        key = (phase, tuple(sorted((s, c) for s, (_, c) in weights.items())), rows)
        key += (torch.get_num_threads(),)
        if key not in self.decisions:
            seconds = time_linears(weights, rows, backward=phase == "passes")
            self.decisions[key] = LinearTiming(phase, rows, *seconds)
            log.info(self.decisions[key].describe())
        return self.decisions[key].onednn_wins


# One per process: every engine (the SFT and GRPO stages', evaluation's) shares its decisions.
CHOOSER = LinearChooser()
