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
REPEATS after a warm-up call. The choice is made per shape: the winner differs between shapes
on one CPU (on an AMD EPYC Zen 3 at 16 rows, MKL and oneDNN were within 5% on a layer's
products while SmolLM2's 576 -> 49152 head took 32.6 ms in MKL and 13.4 ms in oneDNN). Both
kernels compute the same products (float32, no reduced precision; results equal to rounding),
so the choice changes speed only, and rounding: a decision is therefore stored per machine
kind (medrl.rollout.decision_store) and reused by later processes, so that a resumed run takes
the kernels of the run it continues. The decision and its figures are logged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medrl.rollout.decision_store import stored_or_measured
from medrl.rollout.onednn_linear import (
    _matmul,
    onednn_linear_supported,
    prepacked_weight,
    prepacking_supported,
)
from medrl.sharding import weights_sharded

log = logging.getLogger(__name__)

PASS_ROWS = 256  # rows of a log-prob / update / SFT product: a packed micro-batch's order
REPEATS = 3


@dataclass(frozen=True)
class ShapeTiming:
    """Seconds of the products of every float32 Linear with one weight shape, in each kernel."""

    shape: tuple[int, int]  # the weight's (out, in)
    count: int  # Linears with this shape
    torch_seconds: float  # count x (forward, plus the input gradient for passes)
    onednn_seconds: float

    @property
    def onednn_wins(self) -> bool:
        return self.onednn_seconds < self.torch_seconds

    @property
    def best_seconds(self) -> float:
        return min(self.torch_seconds, self.onednn_seconds)

    def label(self) -> str:
        out_features, in_features = self.shape
        return f"{in_features}->{out_features} x{self.count}"


@dataclass(frozen=True)
class LinearTiming:
    """One phase's timing: every weight shape of the model's float32 Linears in both kernels."""

    phase: str  # sampling | passes
    rows: int
    shapes: tuple[ShapeTiming, ...]
    stored: bool = False  # read from the machine's DecisionStore, timed by an earlier process

    @property
    def torch_seconds(self) -> float:
        return sum(s.torch_seconds for s in self.shapes)

    @property
    def onednn_seconds(self) -> float:
        return sum(s.onednn_seconds for s in self.shapes)

    @property
    def chosen_seconds(self) -> float:
        return sum(s.best_seconds for s in self.shapes)

    @property
    def onednn_shapes(self) -> frozenset[tuple[int, int]]:
        """The weight shapes whose products oneDNN ran faster: the Linears routed to it."""
        return frozenset(s.shape for s in self.shapes if s.onednn_wins)

    def describe(self) -> str:
        onednn = [s.label() for s in self.shapes if s.onednn_wins]
        torch_side = [s.label() for s in self.shapes if not s.onednn_wins]
        return (
            f"cpu_linear=auto, {self.phase} ({self.rows} rows): "
            f"oneDNN for [{', '.join(onednn)}], torch/MKL for [{', '.join(torch_side)}]: "
            f"{1000 * self.chosen_seconds:.2f} ms per round of the model's Linears as chosen "
            f"(torch/MKL alone {1000 * self.torch_seconds:.2f} ms, "
            f"oneDNN alone {1000 * self.onednn_seconds:.2f} ms)"
            + (" [stored: timed by an earlier process on this CPU kind]" if self.stored else "")
        )

    def to_json(self) -> dict:
        shapes = [[*s.shape, s.count, s.torch_seconds, s.onednn_seconds] for s in self.shapes]
        return {"phase": self.phase, "rows": self.rows, "shapes": shapes}

    @classmethod
    def from_json(cls, data: dict) -> LinearTiming:
        shapes = tuple(ShapeTiming((o, i), c, t, d) for o, i, c, t, d in data["shapes"])
        return cls(data["phase"], data["rows"], shapes, stored=True)


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
    weights: dict[tuple[int, int], tuple[torch.Tensor, int]],
    rows: int,
    backward: bool,
    prepack: bool = False,
) -> tuple[ShapeTiming, ...]:
    """Each weight shape's seconds in both kernels for one round of products: `count` times
    the forward x [rows, in] @ W^T and, with `backward`, the input gradient g [rows, out] @ W
    (what each kernel runs for a Linear whose input needs a gradient). prepack: oneDNN's
    forward reads a prepacked copy of the weight (as sampling does; the copy is made once per
    rollout and not timed)."""
    generator = torch.Generator().manual_seed(0)
    timings = []
    with torch.no_grad():
        for (out_features, in_features), (weight, count) in weights.items():
            x = torch.randn(rows, in_features, generator=generator)
            packed = prepacked_weight(weight, rows) if prepack else weight
            products = [(x, weight, packed)]  # (input, torch's matrix, oneDNN's matrix)
            if backward:
                grad = torch.randn(rows, out_features, generator=generator)
                products.append((grad, weight.t(), weight.t()))
            torch_seconds = onednn_seconds = 0.0
            for inputs, matrix, onednn_matrix in products:
                torch_seconds += count * _best_seconds(
                    lambda i=inputs, m=matrix: nn.functional.linear(i, m)
                )
                onednn_seconds += count * _best_seconds(
                    lambda i=inputs, m=onednn_matrix: _matmul(i, m, None)
                )
            timings.append(
                ShapeTiming((out_features, in_features), count, torch_seconds, onednn_seconds)
            )
    return tuple(timings)


class LinearChooser:
    """cpu_linear=auto: which float32 Linears to route through oneDNN, per phase and weight
    shape, decided by `time_linears` once per (phase, weight shapes, rows, threads, prepacking)
    and, with `persist`, stored for the machine kind (later processes read it)."""

    def __init__(self, persist: bool = False) -> None:
        self.decisions: dict[tuple, LinearTiming] = {}
        self.persist = persist  # keep decisions per machine kind (medrl.rollout.decision_store)

    def onednn_shapes(
        self, model: nn.Module, phase: str, rows: int, prepack_sampling: bool = False
    ) -> frozenset[tuple[int, int]]:
        """The (out, in) weight shapes of `model`'s float32 Linears whose products oneDNN ran
        faster at `rows` rows (sampling: forwards, from prepacked weights with
        `prepack_sampling`; passes: forwards and input gradients); empty
        when the model has no float32 Linear, the build lacks the op or the weights are sharded
        across processes (onednn_linears routes nothing then). Processes of a distributed run
        that find no stored decision time for themselves: both kernels compute the same float32
        products, so ranks that chose differently differ only by rounding."""
        if not onednn_linear_supported() or weights_sharded(model):
            return frozenset()
        weights = float32_linear_weights(model)
        if not weights:
            return frozenset()
        key = (phase, tuple(sorted((s, c) for s, (_, c) in weights.items())), rows)
        key += (torch.get_num_threads(), prepack_sampling)
        if key not in self.decisions:
            self.decisions[key] = self._decide(key, weights, phase, rows, prepack_sampling)
            log.info(self.decisions[key].describe())
        return self.decisions[key].onednn_shapes

    def _decide(self, key, weights, phase, rows, prepack_sampling) -> LinearTiming:
        """The stored decision for `key` on this machine kind, else a new timing (stored)."""
        sampling = phase == "sampling"
        prepack = sampling and prepack_sampling and prepacking_supported()

        def measure() -> LinearTiming:
            shapes = time_linears(weights, rows, backward=not sampling, prepack=prepack)
            return LinearTiming(phase, rows, shapes)

        if not self.persist:
            return measure()
        return stored_or_measured(
            ("linear", *key), measure, LinearTiming.to_json, LinearTiming.from_json
        )


# One per process: every engine (the SFT and GRPO stages', evaluation's) shares its decisions,
# and every process on one machine kind the stored ones (so a resumed run computes alike).
CHOOSER = LinearChooser(persist=True)
