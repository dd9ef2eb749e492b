"""Completion-token log-probs from the last hidden states, without keeping [K, V] logits.

The packed log-prob pass needs log_softmax(h W^T / T) at the target token of K positions. Built
from the model's logits, autograd keeps the [K, V] float32 logits for the backward and the
backward builds several more [K, V] tensors (the softmax, the gather's and the slice's zero
gradients): on `make bench` (K about 150, V = 49,152) 30 MB each, at the moment the update's
memory peaks (the start of the backward, with every activation still held).

`head_logprobs` computes the same values a chunk of rows at a time and keeps only the hidden
states [K, H] and one log-sum-exp per row; its backward recomputes each chunk's logits (one
more [chunk, H] x [H, V] product per chunk, about 20 ms for the bench's micro-batch) and
never holds more than one chunk's [chunk, V] temporaries. The entropies come from the same
chunks, with their own gradient (an entropy bonus trains through them) computed in the same
backward loop only when the loss used them.

`hidden_states_at(model, ...)` runs the model with its output layer replaced by the identity
for one call, so the model's own forward (masks, positions, logits_to_keep) yields the final
hidden states where it would have yielded logits; `fused_head_supported(model)` says where the
logits are exactly ``lm_head(hidden)`` (no logit scaling or soft-capping).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from medrl.rollout.onednn_linear import onednn_linear
from medrl.sharding import weights_sharded

# Model types whose causal-LM logits are exactly lm_head(final hidden states).
PLAIN_HEAD_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")
# [chunk, V] float32 elements per chunk: 2**22 = 16 MiB (85 rows of a 49k vocabulary).
HEAD_CHUNK_ELEMENTS = 1 << 22


def fused_head_supported(model: nn.Module) -> bool:
    """Whether the model's logits are a plain, bias-free Linear of its final hidden states,
    whose weight stays whole after the forward (under FSDP or ZeRO-3 it is a shard again by
    then)."""
    if weights_sharded(model):
        return False
    config = getattr(model, "config", None)
    config = getattr(config, "get_text_config", lambda: config)()
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return False
    if getattr(config, "final_logit_softcapping", None) is not None:
        return False
    head = model.get_output_embeddings()
    return type(head) is nn.Linear and head.bias is None


@contextmanager
def _identity_head(model: nn.Module) -> Iterator[tuple[nn.Linear, bool]]:
    """Inside the block the output layer returns its input. Yields (the layer, whether its
    forward was replaced on the instance on entry, e.g. routed by medrl.rollout.onednn_linear);
    that forward is back on exit."""
    head = model.get_output_embeddings()
    own = vars(head).get("forward")
    head.forward = lambda hidden: hidden
    try:
        yield head, own is not None
    finally:
        if own is not None:
            head.forward = own
        else:
            head.__dict__.pop("forward", None)


def hidden_states_at(model: nn.Module, **inputs: Any) -> tuple[torch.Tensor, nn.Linear, bool]:
    """(final hidden states [1, K, H] where the model would return logits, its output layer,
    whether that layer was routed through oneDNN on entry: head_logprobs multiplies the same
    way)."""
    with _identity_head(model) as (head, routed):
        hidden = model(**inputs).logits
    return hidden, head, routed


def _product(onednn: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """x [M, in] @ weight [out, in]^T: onednn_linear (oneDNN where it can run there) when the
    output layer was routed, else F.linear."""
    return onednn_linear if onednn else nn.functional.linear


class _HeadLogProbs(torch.autograd.Function):
    """logp [K] = log_softmax(hidden W^T / T)[targets] and entropy [K], by chunks.

    Backward, per chunk with s = logits / T, p = softmax(s): d s = g_logp (onehot(target) - p)
    - g_H p (s - E_p[s]) (the entropy's gradient, since H = lse - E_p[s]; its term is skipped
    when nothing used the entropy), d logits = d s / T, d hidden = d logits @ W,
    d W += d logits^T @ hidden (when W trains)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, rows, onednn):
        product = _product(onednn)
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # the softmax in float32 or wider
        logp = hidden.new_empty(len(targets), dtype=dtype)  # [K]
        lse = torch.empty_like(logp)  # [K]
        entropy = torch.empty_like(logp)  # [K]
        for start in range(0, len(targets), rows):
            stop = start + rows
            scaled = _scaled_logits(product, hidden[start:stop], weight, dtype, temperature)
            chunk_lse = torch.logsumexp(scaled, dim=-1)  # [k]
            lse[start:stop] = chunk_lse
            logp[start:stop] = scaled.gather(-1, targets[start:stop, None])[:, 0] - chunk_lse
            probs = torch.sub(scaled, chunk_lse[:, None]).exp_()  # [k, V]
            entropy[start:stop] = chunk_lse - probs.mul_(scaled).sum(dim=-1)  # p * s, in p
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.temperature, ctx.rows, ctx.onednn = temperature, rows, onednn
        # An output nobody used arrives as None in the backward, not as zeros: the entropy's
        # gradient term then costs nothing.
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        product = _product(ctx.onednn)
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        if grad_logp is None and grad_entropy is None:
            return grad_hidden, grad_weight, None, None, None, None
        for start in range(0, len(targets), ctx.rows):
            stop = start + ctx.rows
            scaled = _scaled_logits(product, hidden[start:stop], weight, lse.dtype, ctx.temperature)
            probs = torch.sub(scaled, lse[start:stop, None]).exp_()  # p [k, V]
            if grad_entropy is None:  # d s = g_logp (onehot - p), built in p's storage
                grad = probs.mul_(-grad_logp[start:stop, None])  # [k, V]
            else:  # -g_H p (s - E_p[s]), E_p[s] = lse - H; then the log-prob's term
                expected = (lse - entropy)[start:stop, None]  # [k, 1]
                grad = scaled.sub_(expected).mul_(probs).mul_(-grad_entropy[start:stop, None])
                if grad_logp is not None:
                    grad.sub_(probs.mul_(grad_logp[start:stop, None]))
            if grad_logp is not None:
                chunk_targets = targets[start:stop]  # [k]
                grad[torch.arange(len(chunk_targets)), chunk_targets] += grad_logp[start:stop]
            grad = grad.div_(ctx.temperature).to(hidden.dtype)  # d logits [k, V]
            if grad_hidden is not None:
                grad_hidden[start:stop] = product(grad, weight.t())
            if grad_weight is not None:
                grad_weight += grad.t().mm(hidden[start:stop])
        return grad_hidden, grad_weight, None, None, None, None


def _scaled_logits(product, hidden, weight, dtype, temperature) -> torch.Tensor:
    """s = (hidden W^T).to(dtype) / temperature [k, V], divided in place where the product is
    already a fresh tensor of `dtype`: one [k, V] buffer instead of two. The chunk loops above
    likewise build exp and p * s in their own buffers, so a chunk holds at most three [k, V]
    tensors at once (the forward of `make bench`'s update, AMD EPYC Zen 5: the chunks'
    temporaries come at its memory peak, with every activation held)."""
    logits = product(hidden, weight)
    if logits.dtype != dtype:
        return logits.to(dtype).div_(temperature)
    return logits.div_(temperature)


def head_logprobs(
    hidden: torch.Tensor,
    head: nn.Linear,
    targets: torch.Tensor,
    temperature: float = 1.0,
    onednn: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(target) [K], entropy of each next-token distribution [K]; both with gradients to
    hidden and the head's weight; float32, or float64 for float64 inputs) of hidden [K, H]
    through the bias-free `head`, at `temperature`; `onednn`: the products in oneDNN
    (medrl.rollout.onednn_linear) where they can run there."""
    rows = max(1, HEAD_CHUNK_ELEMENTS // max(1, head.weight.shape[0]))
    return _HeadLogProbs.apply(hidden, head.weight, targets, float(temperature), rows, onednn)
