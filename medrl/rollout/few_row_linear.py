"""Float32 Linear layers over few rows, computed weight-major while sampling on a CPU.

A decode step multiplies a handful of rows (the samples still writing) by every weight of the
model. torch's CPU ``F.linear`` computes ``x @ W^T``; for few rows MKL is much slower in that
layout than in ``(W @ x^T)^T``, the same dot products with the weight as the left operand.
Measured on this 2-core CPU (SmolLM2-135M float32, one decode step of the whole model, LoRA
merged, best of 3 x 10 steps): 16 rows 117 ms either way, 8 rows 94 -> 75 ms, 4 rows
103 -> 58 ms, 2 rows 123 -> 51 ms. Decoding ends with few rows left (finished rows leave the
batch), so most steps are in that range. Single matrix products of this model's shapes, with
the weights read from memory as in decoding (all 30 layers' Linears, then the output layer),
also favour the weight-major layout at 32 rows (72 against 96 ms; 26 against 36 ms) and at 64
(107 against 114; 39 against 44), hence the default limit of 64 rows.

The results equal ``F.linear``'s to float32 rounding (another summation order). Only float32
without autocast is routed (bfloat16 showed no such gap), only on a CPU, and only up to
`max_rows` rows; everything else is ``F.linear`` as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from medrl.sharding import is_fsdp_managed


def weight_major_linear(module: nn.Linear, x: torch.Tensor, max_rows: int) -> torch.Tensor:
    """``module(x)``, as ``(W @ x^T)^T`` when x [..., in] holds at most `max_rows` float32 rows
    on a CPU without autocast; otherwise ``F.linear``."""
    weight, bias = module.weight, module.bias
    rows = x.numel() // max(1, x.shape[-1])
    routed = (
        0 < rows <= max_rows
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )
    if not routed:
        return nn.functional.linear(x, weight, bias)
    out = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()  # [rows, out]
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


@contextmanager
def few_row_linears(model: nn.Module, max_rows: int) -> Iterator[int]:
    """Inside the block every plain nn.Linear of `model` runs weight_major_linear (yields how
    many); max_rows <= 0 or an FSDP-managed model changes nothing, nor does a Linear whose
    forward is already replaced on the instance (e.g. by accelerate's hooks). Each module's own
    forward is back on exit, also when the block raises."""
    if max_rows <= 0 or is_fsdp_managed(model):
        yield 0
        return
    linears = [
        module
        for module in model.modules()
        if type(module) is nn.Linear and "forward" not in vars(module)
    ]
    try:
        for module in linears:
            module.forward = _bound(module, max_rows)  # an instance attribute, removed below
        yield len(linears)
    finally:
        for module in linears:
            module.__dict__.pop("forward", None)


def _bound(module: nn.Linear, max_rows: int):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return weight_major_linear(module, x, max_rows)

    return forward
