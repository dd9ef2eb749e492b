"""Log-prob passes that keep fewer activations for the backward, with the same numbers.

The update's peak memory is what one micro-batch's forward keeps for its backward. Measured on
`make bench` (SmolLM2-135M, a packed micro-batch of one prompt and 4 completions, about 340
tokens): 366 MB of saved tensors, of which 178 MB the MLPs' (SiLU's input, its output and the
up projection), 89 MB the attention's (queries, keys and values with each key/value head
repeated for its query heads, the output) and 13 MB one float copy of the mask per layer.
`lean_passes(model)` changes, for a block:

* attention: transformers' sdpa repeats every key/value head for its query heads before a
  masked multi-token call (`repeat_kv`); "medrl_gqa" hands the key/value heads to PyTorch's
  scaled_dot_product_attention as they are (``enable_gqa=True``), which computes the same
  attention without the copies, so the backward keeps 3 heads of keys and values instead of 9
  (SmolLM2-135M);
* SiLU-gated MLPs (Llama, Qwen2, Qwen3, Mistral): ``down(silu(gate(x)) * up(x))`` through
  `silu_mul`, which keeps the gate and up projections and recomputes the SiLU in its backward
  (two [T, intermediate] tensors per layer instead of three).

The packed layout's mask is handed over once as a float mask (medrl.rollout.logprobs), so
every layer keeps a reference to it rather than its own conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from medrl.rollout.decode_attention import attention_implementation
from medrl.utils.forwards import instance_forwards

GQA_ATTENTION = "medrl_gqa"

# MLP classes whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x)).
GATED_MLP_CLASSES = ("LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP")
SILU_CLASSES = ("SiLU", "SiLUActivation")  # torch's, transformers' (F.silu both)


class _SiluMul(torch.autograd.Function):
    """silu(gate) * up, keeping gate and up (not silu(gate)) for the backward.

    d/d up = silu(gate); d/d gate = up * sigmoid(gate) * (1 + gate * (1 - sigmoid(gate)))."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return nn.functional.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        sigmoid = torch.sigmoid(gate)
        grad_gate = grad * up * sigmoid * (1 + gate * (1 - sigmoid))
        grad_up = grad * gate * sigmoid
        return grad_gate, grad_up


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``F.silu(gate) * up`` that keeps two tensors for the backward instead of three."""
    return _SiluMul.apply(gate, up)


def gqa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except that a masked call of several query tokens with
    grouped key/value heads passes those heads to PyTorch as they are (``enable_gqa``).

    query [b, H, q, d], key/value [b, K, L, d], attention_mask [b, 1, q, L] (bool or float)
    -> (output [b, q, H, d], None)."""
    groups = getattr(module, "num_key_value_groups", 1)
    plain = kwargs.get("softcap") is None and kwargs.get("position_bias") is None
    if groups == 1 or query.shape[2] == 1 or attention_mask is None or not plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    output = nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask[:, :, :, : key.shape[-2]],
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=True,
    )  # [b, H, q, d]
    return output.transpose(1, 2).contiguous(), None


def register_lean_attention() -> None:
    """Make "medrl_gqa" known to transformers (the engine calls it when it is built for a CPU
    with lean_activations; nothing is registered at import), once."""
    if GQA_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(GQA_ATTENTION, gqa_attention_forward)
        AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)


@contextmanager
def lean_passes(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Inside the block the model's sdpa attention is "medrl_gqa" and its SiLU-gated MLPs run
    `silu_mul` (yields how many MLPs); everything is back on exit. Nothing changes when
    `enabled` is false."""
    if not enabled:
        yield 0
        return
    register_lean_attention()  # idempotent: callers outside an engine get it registered too
    with ExitStack() as stack:
        stack.enter_context(attention_implementation(model, GQA_ATTENTION))
        yield stack.enter_context(instance_forwards(model, _is_silu_gated_mlp, _lean_mlp_forward))


def _is_silu_gated_mlp(module: nn.Module) -> bool:
    return (
        type(module).__name__ in GATED_MLP_CLASSES
        and type(getattr(module, "act_fn", None)).__name__ in SILU_CLASSES
    )


def _lean_mlp_forward(mlp: nn.Module):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return mlp.down_proj(silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))

    return forward
