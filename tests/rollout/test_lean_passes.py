"""Lean log-prob passes compute what the plain ones compute and keep less for the backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from medrl.rollout import logprobs as logprob_passes
from medrl.rollout.lean_passes import (
    GQA_ATTENTION,
    gqa_attention_forward,
    lean_passes,
    silu_mul,
)
from medrl.rollout.logprobs import takes_tree_mask


class GroupedAttention(nn.Module):
    """What the attention functions read from a model's attention module."""

    num_key_value_groups = 3
    is_causal = True
    training = False


def test_silu_mul_equals_silu_times_up_in_value_and_gradients():
    torch.manual_seed(0)
    gate = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    up = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(silu_mul(gate, up), nn.functional.silu(gate) * up)
    assert torch.autograd.gradcheck(silu_mul, (gate, up))


def saved_storages(fn, *args) -> set[int]:
    """The distinct storages autograd keeps for the backward of fn(*args)."""
    kept: set[int] = set()

    def pack(t):
        kept.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return kept


def test_silu_mul_keeps_gate_and_up_only():
    gate, up = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    ours = saved_storages(silu_mul, gate, up)
    assert ours == {gate.untyped_storage().data_ptr(), up.untyped_storage().data_ptr()}
    plain = saved_storages(lambda g, u: nn.functional.silu(g) * u, gate, up)
    assert len(plain) == 3  # gate, silu(gate) and up


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_gqa_attention_equals_sdpa_with_repeated_heads(mask_dtype):
    torch.manual_seed(0)
    q = torch.randn(1, 6, 9, 8, requires_grad=True)
    k = torch.randn(1, 2, 9, 8, requires_grad=True)
    v = torch.randn(1, 2, 9, 8, requires_grad=True)
    allowed = torch.tril(torch.ones(9, 9, dtype=torch.bool))
    allowed[5:, 2:4] = False  # a tree-shaped hole, as the packed layout has
    mask = allowed[None, None]
    if mask_dtype is not torch.bool:
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    upstream = torch.randn(1, 9, 6, 8)

    def run(attention):
        for t in (q, k, v):
            t.grad = None
        out, _ = attention(GroupedAttention(), q, k, v, mask, scaling=0.3)
        (out * upstream).sum().backward()
        return out.detach(), [t.grad.clone() for t in (q, k, v)]

    ours, our_grads = run(gqa_attention_forward)
    plain, plain_grads = run(sdpa_attention_forward)  # transformers repeats k and v here
    torch.testing.assert_close(ours, plain)
    for got, expected in zip(our_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_gqa_attention_keeps_the_unrepeated_key_and_value_heads():
    q = torch.randn(1, 6, 5, 8, requires_grad=True)
    k, v = torch.randn(1, 2, 5, 8, requires_grad=True), torch.randn(1, 2, 5, 8, requires_grad=True)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.shape) or t, lambda t: t):
        gqa_attention_forward(GroupedAttention(), q, k, v, mask)
    assert (1, 2, 5, 8) in kept and (1, 6, 5, 8) in kept
    assert kept.count((1, 6, 5, 8)) == 2  # the query and the output; no repeated key/value


def test_the_context_switches_attention_and_mlps_and_restores_them(tiny_policy):
    model = tiny_policy.model
    layers = model.config.num_hidden_layers
    with lean_passes(model) as mlps:
        assert mlps == layers
        assert model.config._attn_implementation == GQA_ATTENTION
        assert takes_tree_mask(model)
    assert model.config._attn_implementation == "sdpa"
    assert all("forward" not in vars(m) for m in model.modules())
    with pytest.raises(RuntimeError, match="inside"), lean_passes(model):
        raise RuntimeError("inside")
    assert model.config._attn_implementation == "sdpa"
    assert all("forward" not in vars(m) for m in model.modules())
    with lean_passes(model, enabled=False) as mlps:
        assert mlps == 0 and model.config._attn_implementation == "sdpa"


def test_lean_packed_logprobs_and_gradients_equal_the_plain_ones(
    lora_rollout, packed_pass, same_pass, monkeypatch
):
    packed = []
    original = logprob_passes._packed_logits
    monkeypatch.setattr(
        logprob_passes, "_packed_logits", lambda *a: packed.append(1) or original(*a)
    )
    with lean_passes(lora_rollout.model):
        ours = packed_pass()
    plain = packed_pass()
    assert packed == [1, 1]  # both passes took the packed layout
    same_pass(ours, plain)
