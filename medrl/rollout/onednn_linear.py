"""Float32 Linear layers through oneDNN's matmul on a CPU, forward and backward.

torch computes a float32 ``F.linear`` on a CPU with MKL's sgemm. On the AMD EPYC (Zen 5) CPU
this project is measured on, torch 2.13's MKL (2024) reaches about 185 GFLOP/s with 2 threads
on this model's shapes, while oneDNN 3.12 (also inside torch, its `brg_matmul:avx512_core`
kernel) reaches 360-440 GFLOP/s on the same float32 products (MKL_VERBOSE names its generic
"Intel(R) Architecture processors" code path here, not its AVX-512 one). The few rows of a
decode step gain as much: SmolLM2-135M's 211 Linears of one 16-row step took 70 ms with MKL
and 34 ms with oneDNN. See experiments/performance/README.md.

`onednn_linears(model)` routes every plain ``nn.Linear`` of a model (LoRA's base, A and B
layers included) through `onednn_linear` for a block: a float32 product in oneDNN without
reduced-precision math (the results equal F.linear's to float32 rounding, another summation
order), with its own backward (the input's gradient through oneDNN as well; the weight's and
bias's, when they train, as torch computes them). Everything else is ``F.linear`` as before:
other dtypes, autocast (torch already runs bfloat16 matmuls in oneDNN), other devices, and
models whose weights are sharded (FSDP, DeepSpeed ZeRO-3). The graph keeps the routed
function, so a backward after the block still runs it.

The op is torch's own `torch.ops.mkldnn._linear_pointwise` (what torch.compile's CPU backend
emits for a Linear); where a torch build lacks it, `onednn_linear_supported()` is False and
nothing is routed.

oneDNN (its primitive cache) and ideep (torch's wrapper around it, an LRU of computations) keep
what they build for every input shape, 1,024 entries each by default. GRPO's packed log-prob
passes give every micro-batch a new number of rows, so unbounded the two caches grew by about
35 MB per GRPO step in `make bench` (about 0.6 MB per new shape, still growing after 600
shapes). `bound_kernel_caches` caps both at KERNEL_CACHE_CAPACITY entries (about 20 MB, flat
after 600 shapes), enough for the 8-14 shapes a pass uses in turn; building a kernel for a new
shape costs about 1 ms. The rollout engine calls it when it is built for a CPU (importing sets
nothing), before the stage's first forward; a value already set in the environment is kept.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from medrl.sharding import weights_sharded
from medrl.utils.forwards import instance_forwards

# Entries of oneDNN's primitive cache and of ideep's LRU; both read their variable on first use.
KERNEL_CACHE_CAPACITY = 64
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Cap oneDNN's and ideep's per-shape caches at `capacity` entries, unless the environment
    already sets them; effective only before the process's first oneDNN call."""
    for name in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(name, str(capacity))


def onednn_linear_supported() -> bool:
    """True when this torch build has oneDNN and its float32 linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def prepacking_supported() -> bool:
    """True when this torch build can also lay a weight out in oneDNN's own blocked format."""
    return onednn_linear_supported() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def prepacked_weight(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """A copy of weight [out, in] in oneDNN's blocked layout for products of about `rows` rows
    (an opaque mkldnn tensor `_matmul` takes in place of the weight; any row count works).

    oneDNN otherwise repacks the weight inside every product: at the 16 rows of a decode step
    that is a large part of the work. On an AMD EPYC Zen 3 with 2 threads, 16-row products
    with SmolLM2-135M's weights took 0.27 instead of 0.37 ms (576 -> 1536) and 9.9 instead of
    14.0 ms (the 576 -> 49152 head). The copy costs the weight's bytes again while it lives."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)


def _matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, in] @ weight[out, in]^T (+ bias [out]) -> [M, out] in oneDNN; weight may be a
    transposed view (oneDNN reads either layout)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinearFunction(torch.autograd.Function):
    """y = x W^T + b with both products of the input path in oneDNN.

    Saves what F.linear's autograd saves: the input only when the weight needs a gradient,
    the weight (no copy) for the input's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        flat = x.reshape(-1, x.shape[-1]).contiguous()  # [M, in]
        ctx.save_for_backward(flat if weight.requires_grad else None, weight)
        ctx.input_shape = x.shape
        ctx.has_bias = bias is not None
        out = _matmul(flat, weight, bias)  # [M, out]
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        flat, weight = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1]).contiguous()  # [M, out]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul(grad, weight.t(), None).reshape(ctx.input_shape)  # [..., in]
        if ctx.needs_input_grad[1]:
            grad_w = grad.t().mm(flat)  # [out, in]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=0)  # [out]
        return grad_x, grad_w, grad_b


def routes_to_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `onednn_linear` runs x @ weight^T in oneDNN (float32 on a CPU, no autocast,
    at least one row) rather than F.linear."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.layout == torch.strided
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
    )


def onednn_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, in oneDNN where `routes_to_onednn` says so."""
    if not routes_to_onednn(x, weight) or (bias is not None and bias.dtype != torch.float32):
        return nn.functional.linear(x, weight, bias)
    if not _needs_graph(x, weight, bias):
        # No gradient to keep (sampling, the reference pass): the product alone. Going through
        # the autograd Function cost about 46 us per call, 10 ms of a 135 ms decode forward
        # of SmolLM2-135M at 16 rows (AMD EPYC Zen 3).
        return _product(x, weight, bias, weight.shape[0])
    return _OneDnnLinearFunction.apply(x, weight, bias)


def _product(x: torch.Tensor, matrix: torch.Tensor, bias, out_features: int) -> torch.Tensor:
    """x [..., in] through `_matmul` (matrix: the weight or its prepacked copy) -> [..., out],
    with no autograd Function: for products that keep no graph."""
    flat = x.reshape(-1, x.shape[-1]).contiguous()  # [M, in]
    return _matmul(flat, matrix, bias).reshape(*x.shape[:-1], out_features)


def _needs_graph(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether autograd records this product: grad mode on and some operand requires grad."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)


@contextmanager
def onednn_linears(
    model: nn.Module,
    enabled: bool = True,
    shapes: Collection[tuple[int, int]] | None = None,
    prepack_rows: int | None = None,
) -> Iterator[int]:
    """Inside the block every plain nn.Linear of `model` runs `onednn_linear` (yields how many).

    shapes: only the Linears whose weight has one of these (out, in) shapes (None: all; the
    per-shape choice of medrl.rollout.kernel_choice). prepack_rows: products that keep no graph
    (sampling) use a `prepacked_weight` copy for that many rows, made on a Linear's first such
    product in the block and again if its weight changes (its version counter), dropped on
    exit. Nothing changes when `enabled` is false or `shapes` is empty, the build lacks the
    op, the model's weights are sharded (FSDP, DeepSpeed ZeRO-3), or for a Linear whose
    forward is already replaced on the instance (e.g. by accelerate's hooks, or an enclosing
    onednn_linears). Each module's own forward is back on exit, also when the block raises."""
    nothing = shapes is not None and len(shapes) == 0
    if not enabled or nothing or not onednn_linear_supported() or weights_sharded(model):
        yield 0
        return
    wanted = None if shapes is None else set(shapes)

    def selected(module: nn.Module) -> bool:
        if type(module) is not nn.Linear:
            return False
        return wanted is None or tuple(module.weight.shape) in wanted

    make_forward = _routed_forward
    if prepack_rows is not None and prepacking_supported():
        make_forward = partial(_prepacked_forward, rows=prepack_rows)
    with instance_forwards(model, selected, make_forward) as routed:
        yield routed


def _routed_forward(module: nn.Linear):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, module.weight, module.bias)

    return forward


def _prepacked_forward(module: nn.Linear, rows: int):
    packed: dict[str, object] = {}  # the copy and the weight version it was made from

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight, bias = module.weight, module.bias
        plain = not routes_to_onednn(x, weight) or _needs_graph(x, weight, bias)
        if plain or (bias is not None and bias.dtype != torch.float32):
            return onednn_linear(x, weight, bias)
        if packed.get("version") != weight._version:
            packed["weight"] = prepacked_weight(weight, rows)
            packed["version"] = weight._version
        return _product(x, packed["weight"], bias, weight.shape[0])

    return forward
