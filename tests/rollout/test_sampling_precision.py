"""Two rollout speed-ups that must not change what a sampling step computes.

- "medrl_decode" attention (one query token: two matmuls and a float32 softmax over the grouped
  heads) gives transformers' sdpa output, and sampling through it decodes the same tokens;
- under autocast, frozen Linear weights cast once (autocast_weights) give the logits and the
  adapter gradients autocast computes by casting them every call, and the model gets its own
  weights back; copies kept across blocks (CastCopies) are made once per weight and again only
  when it changes, and LoRA merged straight into autocast's dtype gives the same weights.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from medrl.rollout import (
    encode_prompts,
    left_pad,
    merged_adapter,
)
from medrl.rollout.decode_attention import decode_attention_forward, sampling_attention
from medrl.rollout.merged_adapter import CastCopies, autocast_weights, merged_lora


@pytest.fixture
def lora_model(tiny_policy):
    """The tiny model under a LoRA adapter with random B: frozen base, trainable adapters."""
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    return get_peft_model(copy.deepcopy(tiny_policy.model), config).eval()


PROMPTS = ["Which vitamin deficiency causes scurvy?", "A", "Name the nerve of the deltoid."]
CPU = torch.device("cpu")


class GroupedAttention(nn.Module):
    """What the attention functions read from the calling layer."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True
        self.training = False


def attention_inputs(rows=5, heads=6, kv_heads=2, length=9, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(rows, heads, 1, dim, generator=g)
    key = torch.randn(rows, kv_heads, length, dim, generator=g)
    value = torch.randn(rows, kv_heads, length, dim, generator=g)
    allowed = torch.ones(rows, 1, 1, length, dtype=torch.bool)
    allowed[0, ..., :3] = False  # left padding of row 0
    allowed[3, ..., :1] = False
    return query, key, value, allowed


def in_bf16(*tensors):
    return [t.bfloat16() for t in tensors]


@pytest.mark.parametrize("masked", [True, False])
def test_one_token_attention_in_bf16_equals_sdpa_to_bf16_rounding(masked):
    query, key, value, allowed = attention_inputs()
    query, key, value = in_bf16(query, key, value)
    module = GroupedAttention(groups=3)
    mask = allowed if masked else None
    ours, _ = decode_attention_forward(module, query, key, value, mask, scaling=0.3)
    exact, _ = sdpa_attention_forward(
        module, query.float(), key.float(), value.float(), mask, scaling=0.3
    )
    assert ours.shape == exact.shape == (5, 1, 6, 8) and ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), exact, atol=2e-2, rtol=2e-2)


def test_float32_one_token_steps_stay_on_sdpa():
    # No gain was measured in float32: the same call as sdpa, bit for bit.
    query, key, value, allowed = attention_inputs()
    module = GroupedAttention(groups=3)
    ours, _ = decode_attention_forward(module, query, key, value, allowed, scaling=0.3)
    reference, _ = sdpa_attention_forward(module, query, key, value, allowed, scaling=0.3)
    assert torch.equal(ours, reference)


def test_one_token_attention_ignores_masked_positions():
    query, key, value, allowed = attention_inputs()
    query, key, value = in_bf16(query, key, value)
    module = GroupedAttention(groups=3)
    before, _ = decode_attention_forward(module, query, key, value, allowed)
    key[0, :, :3] = 1e3  # row 0 cannot see these positions: changing them changes nothing
    value[0, :, :3] = -1e3
    after, _ = decode_attention_forward(module, query, key, value, allowed)
    torch.testing.assert_close(after, before)
    assert math.isfinite(float(after.abs().max()))


def test_several_query_tokens_go_to_sdpa():
    rows, heads, kv_heads, length, dim = 2, 4, 2, 5, 8
    query = torch.randn(rows, heads, length, dim)
    key, value = torch.randn(rows, kv_heads, length, dim), torch.randn(rows, kv_heads, length, dim)
    module = GroupedAttention(groups=2)
    ours, _ = decode_attention_forward(module, query, key, value, None)
    reference, _ = sdpa_attention_forward(module, query, key, value, None)
    assert torch.equal(ours, reference)


def test_sampling_attention_switches_sdpa_for_the_block_only(tiny_policy):
    config = tiny_policy.model.config
    assert config._attn_implementation == "sdpa"
    with sampling_attention(tiny_policy.model) as switched:
        assert switched
        assert config._attn_implementation == "medrl_decode"
    assert config._attn_implementation == "sdpa"
    config._attn_implementation = "eager"
    try:
        with sampling_attention(tiny_policy.model) as switched:
            assert not switched, "only sdpa is replaced"
            assert config._attn_implementation == "eager"
    finally:
        config._attn_implementation = "sdpa"


def test_a_bf16_decode_step_runs_medrl_decode_and_gives_sdpa_logits(tiny_policy, monkeypatch):
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1].shape[2])  # query tokens
        return decode_attention_forward(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "medrl_decode", counted)
    ids, mask = left_pad(encode_prompts(tok, PROMPTS), tok.pad_token_id)  # [b, P]
    step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [b, P+1]
    next_ids = ids[:, -1:]  # any token

    def one_decode_step():
        prefill = model(input_ids=ids, attention_mask=mask, use_cache=True)
        return model(input_ids=next_ids, attention_mask=step_mask, cache=prefill.cache).logits

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = one_decode_step()
        with sampling_attention(model):
            ours = one_decode_step()
    layers = model.config.num_hidden_layers
    assert calls.count(1) == layers, "every layer's one-token step went through medrl_decode"
    torch.testing.assert_close(ours, plain, atol=3e-2, rtol=3e-2)


def prompt_logits(model, tok):
    ids, mask = left_pad(encode_prompts(tok, PROMPTS), tok.pad_token_id)
    return model(input_ids=ids, attention_mask=mask).logits


def test_autocast_weights_give_autocast_logits_and_restore_the_weights(tiny_policy, lora_model):
    tok = tiny_policy.tokenizer
    objects = dict(lora_model.named_parameters())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        recast_every_call = prompt_logits(lora_model, tok)
        with autocast_weights(lora_model, CPU) as dtype:
            assert dtype == torch.bfloat16
            linears = [m for m in lora_model.modules() if type(m) is nn.Linear]
            frozen = [m for m in linears if not m.weight.requires_grad]
            assert frozen and all(m.weight.dtype == torch.bfloat16 for m in frozen)
            trainable = [m for m in linears if m.weight.requires_grad]
            assert trainable and all(m.weight.dtype == torch.float32 for m in trainable)
            cast_once = prompt_logits(lora_model, tok)
    assert torch.equal(cast_once, recast_every_call)
    for name, param in lora_model.named_parameters():
        assert param is objects[name], f"{name}: the model's own Parameter is put back"
        assert param.dtype == torch.float32


def test_autocast_weights_change_nothing_without_autocast(tiny_policy):
    model = tiny_policy.model
    objects = dict(model.named_parameters())
    with autocast_weights(model, CPU) as dtype:
        assert dtype is None
        assert dict(model.named_parameters()) == objects


def test_autocast_weights_keep_the_adapter_gradients(tiny_policy, lora_model):
    tok = tiny_policy.tokenizer

    def adapter_grads():
        lora_model.zero_grad()
        prompt_logits(lora_model, tok).float().logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in lora_model.named_parameters() if p.requires_grad}

    with torch.autocast("cpu", dtype=torch.bfloat16):
        recast_every_call = adapter_grads()
        with autocast_weights(lora_model, CPU):
            cast_once = adapter_grads()
    assert recast_every_call.keys() == cast_once.keys() and cast_once
    for name, grad in cast_once.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, recast_every_call[name], rtol=0, atol=0, msg=name)


def frozen_weights(model):
    return {
        name: module.weight
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not module.weight.requires_grad
    }


@pytest.fixture
def released(monkeypatch):
    """The weights handed to release_file_pages, call by call; each counts as file-backed
    (one page released) unless its id is in `released.in_memory`."""

    class Calls(list):
        in_memory: set[int] = set()

    calls = Calls()

    def release(tensors):
        tensors = list(tensors)
        calls.append(tensors)
        return [0 if id(t) in calls.in_memory else 4096 for t in tensors]

    monkeypatch.setattr(merged_adapter, "release_file_pages", release)
    return calls


def test_kept_copies_are_cast_once_and_again_only_when_a_weight_changes(
    tiny_policy, lora_model, released
):
    tok = tiny_policy.tokenizer
    copies = CastCopies(release_sources=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        recast_every_call = prompt_logits(lora_model, tok)
        with autocast_weights(lora_model, CPU, copies):
            first = frozen_weights(lora_model)
            kept_once = prompt_logits(lora_model, tok)
        with autocast_weights(lora_model, CPU, copies):
            second = frozen_weights(lora_model)
            kept_twice = prompt_logits(lora_model, tok)
    assert torch.equal(kept_once, recast_every_call) and torch.equal(kept_twice, kept_once)
    assert first.keys() == second.keys() and len(first) == len(copies)
    same = [second[n].data_ptr() == first[n].data_ptr() for n in first]
    assert all(same), "the same copies, not new casts"
    originals = frozen_weights(lora_model)
    assert len(released) == 1 and {id(w) for w in released[0]} == {
        id(w) for w in originals.values()
    }, "each original released once, when its copy was made"

    name, changed = next(iter(originals.items()))
    with torch.no_grad():
        changed.add_(1.0)  # in place: its version moves on
    with torch.autocast("cpu", dtype=torch.bfloat16), autocast_weights(lora_model, CPU, copies):
        third = frozen_weights(lora_model)
    assert third[name].data_ptr() != first[name].data_ptr()
    assert torch.equal(third[name], changed.bfloat16())
    assert all(third[n].data_ptr() == first[n].data_ptr() for n in first if n != name)
    assert [w is changed for w in released[1]] == [True]


def test_copies_of_weights_that_no_longer_exist_are_forgotten():
    copies = CastCopies()
    transient = torch.randn(4, 4)
    copies.cast([transient], torch.bfloat16)
    assert len(copies) == 1
    del transient
    copies.cast([], torch.bfloat16)
    assert len(copies) == 0


def test_lora_merged_into_autocast_dtype_is_the_merged_weight_cast(
    tiny_policy, lora_model, released
):
    def adapted_weights():
        return {n: w.clone() for n, w in frozen_weights(lora_model).items() if "proj" in n}

    with merged_lora(lora_model) as merged_in_float32:
        float32 = adapted_weights()
    with merged_lora(lora_model, dtype=torch.bfloat16, release_pages=True) as merged_in_bf16:
        bf16 = adapted_weights()
    assert merged_in_float32 and merged_in_bf16
    adapted = [n for n in bf16 if bf16[n].dtype == torch.bfloat16]
    assert adapted, "the adapted layers hold bfloat16 merged weights"
    for name in adapted:
        assert torch.equal(bf16[name], float32[name].bfloat16()), name
    bases = [layer.get_base_layer().weight for layer in merged_adapter.lora_layers(lora_model)]
    assert len(released) == 1 and all(w is b for w, b in zip(released[0], bases, strict=True))
    assert all(w.dtype == torch.float32 for w in frozen_weights(lora_model).values())


def test_a_re_pointed_weight_is_cast_again():
    weight = torch.zeros(4, 4)
    copies = CastCopies()
    [first] = copies.cast([weight], torch.bfloat16)
    weight.data = torch.full((4, 4), 5.0)  # same object and version, other storage
    [second] = copies.cast([weight], torch.bfloat16)
    assert torch.equal(first, torch.zeros(4, 4, dtype=torch.bfloat16))
    assert torch.equal(second, torch.full((4, 4), 5.0, dtype=torch.bfloat16))


def test_released_sources_keep_only_the_copies_of_file_backed_weights(released):
    mapped, in_memory = torch.randn(4, 4), torch.randn(4, 4)
    released.in_memory.add(id(in_memory))
    copies = CastCopies(release_sources=True)
    first = copies.cast([mapped, in_memory], torch.bfloat16)
    second = copies.cast([mapped, in_memory], torch.bfloat16)
    assert len(copies) == 1
    assert second[0] is first[0], "the file-backed weight's copy is kept"
    assert second[1] is not first[1] and torch.equal(second[1], first[1]), "cast per block"


def test_a_model_with_peft_merged_layers_is_cast_afresh(tiny_policy, lora_model):
    """peft's merge_adapter adds into the weights' .data, which no version counter sees."""
    copies = CastCopies()
    lora_model.merge_adapter()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), autocast_weights(lora_model, CPU, copies):
            cast = frozen_weights(lora_model)
        assert len(copies) == 0
        bases = {n: w for n, w in frozen_weights(lora_model).items()}
        for name, weight in cast.items():
            assert torch.equal(weight, bases[name].bfloat16()), name
    finally:
        lora_model.unmerge_adapter()
