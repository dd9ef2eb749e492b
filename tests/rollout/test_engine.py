"""The fast rollout paths compute what the straightforward ones compute.

- medrl's sampler with a shared prompt prefill = the same sampler prefilling every row
  (greedy, and sampled under one seed), = transformers' generate (greedy); its draws follow
  transformers' warped distribution;
- rows that end leave the batch without changing the other rows;
- a LoRA adapter merged for sampling gives the unmerged logits and leaves the weights as they
  were, bit for bit;
- shared-prompt log-probs, and the packed layout, = full log-probs, in value, entropy and
  gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from medrl.rollout import (
    EngineSettings,
    RolloutEngine,
    SamplingSettings,
    completion_logprobs,
    encode_prompts,
    generate,
    left_pad,
)
from medrl.rollout.decoding import decode, sample_categorical
from medrl.rollout.logprobs import packed_layout, takes_tree_mask
from medrl.rollout.merged_adapter import can_merge_exactly, merged_lora

PROMPTS = [
    "Which vitamin deficiency causes scurvy?",
    "A",
    "Name the nerve that supplies the deltoid muscle and the skin over it.",
]
GREEDY = SamplingSettings(greedy=True, max_new_tokens=6)
SAMPLE = SamplingSettings(temperature=1.0, max_new_tokens=6)
MEDRL = EngineSettings(sampler="medrl")


@pytest.fixture
def lora_policy(tiny_policy):
    """The tiny model with a LoRA adapter whose B is random, so the adapter changes outputs."""
    torch.manual_seed(0)
    base = copy.deepcopy(tiny_policy.model)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    return get_peft_model(base, config).eval()


def prompt_batch(policy):
    tok = policy.tokenizer
    return left_pad(encode_prompts(tok, PROMPTS), tok.pad_token_id)  # [b, P]


def run_decode(model, tok, ids, mask, settings, share_prompt, eos_ids, seed=0, samples=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        return decode(
            model,
            ids,
            mask,
            samples,
            settings,
            eos_ids,
            tok.pad_token_id,
            share_prompt=share_prompt,
        )


def stop_token(model, tok, ids, mask, settings=SAMPLE):
    """A token that some rows emit early and others never: made an eos, it ends rows at
    different steps."""
    rows = run_decode(model, tok, ids, mask, settings, True, [tok.eos_token_id], seed=11)
    for candidate in rows[:, 1:4].flatten().tolist():
        present = (rows == candidate).any(dim=1)
        if not present.all():
            return candidate
    raise AssertionError("every early token appears in every row")


@pytest.mark.parametrize("settings", [GREEDY, SAMPLE], ids=["greedy", "sampled"])
def test_shared_prompt_prefill_samples_what_per_row_prefill_samples(tiny_policy, settings):
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    ids, mask = prompt_batch(tiny_policy)
    eos = [tok.eos_token_id, stop_token(model, tok, ids, mask, settings)]
    shared = run_decode(model, tok, ids, mask, settings, True, eos, seed=11)
    separate = run_decode(model, tok, ids, mask, settings, False, eos, seed=11)
    assert torch.equal(shared, separate)
    ended = torch.isin(shared, torch.tensor(eos)).any(dim=1)
    assert ended.any() and not ended.all(), "some rows end early and leave the batch"


def test_finished_rows_end_with_their_eos_and_pad_after_it(tiny_policy):
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    ids, mask = prompt_batch(tiny_policy)
    eos = [tok.eos_token_id, stop_token(model, tok, ids, mask)]
    rows = run_decode(model, tok, ids, mask, SAMPLE, True, eos, seed=11)
    for row in rows:
        is_eos = torch.isin(row, torch.tensor(eos))
        if is_eos.any():
            end = int(is_eos.int().argmax())
            assert row[end + 1 :].eq(tok.pad_token_id).all()


def test_medrl_sampler_equals_transformers_generate_greedy_with_early_ends(
    tiny_policy, monkeypatch
):
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    ids, mask = prompt_batch(tiny_policy)
    stop = stop_token(model, tok, ids, mask, GREEDY)
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tok.eos_token_id, stop])
    ours = generate(model, tok, PROMPTS, GREEDY, num_samples=2, engine=MEDRL)
    theirs = generate(model, tok, PROMPTS, GREEDY, num_samples=2)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert torch.equal(ours.completion_mask, theirs.completion_mask)
    assert ours.texts == theirs.texts and ours.truncated == theirs.truncated
    assert any(ours.truncated) and not all(ours.truncated), "some rows ended early"


def test_sampled_token_frequencies_match_the_probabilities():
    """Inverse-CDF draws follow probs: 40,000 draws over 5 tokens, each frequency within 4
    standard errors; a zero-probability token is never drawn."""
    probs = torch.tensor([0.5, 0.25, 0.0, 0.15, 0.10])
    torch.manual_seed(0)
    draws = sample_categorical(probs.expand(40_000, -1).contiguous())
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    stderr = (probs * (1 - probs) / draws.numel()).sqrt()
    assert freq[2] == 0
    assert ((freq - probs).abs() <= 4 * stderr + 1e-9).all(), freq


def test_sampling_refuses_rows_without_a_distribution():
    for bad in (torch.tensor([[0.5, float("nan")]]), torch.zeros(1, 3)):
        with pytest.raises(ValueError, match="cannot sample"):
            sample_categorical(bad)


def test_medrl_sampler_draws_from_transformers_warped_distribution(tiny_policy):
    """top_k = 3: every sampled token is one of the 3 most likely under the model, as
    transformers' warpers define them, and more than one of them gets drawn."""
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    ids, mask = prompt_batch(tiny_policy)
    settings = SamplingSettings(temperature=0.7, top_k=3, max_new_tokens=1)
    rows = run_decode(model, tok, ids, mask, settings, True, [tok.eos_token_id], samples=64)
    with torch.no_grad():
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # as the sampler numbers them
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
    allowed = logits.topk(3, dim=-1).indices.repeat_interleave(64, dim=0)  # [b*64, 3]
    assert (rows[:, :1] == allowed).any(dim=1).all()
    assert len(set(rows[:64, 0].tolist())) > 1


def test_top_k_one_sampling_is_greedy(tiny_policy):
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    ids, mask = prompt_batch(tiny_policy)
    eos = [tok.eos_token_id]
    one = SamplingSettings(temperature=1.3, top_k=1, max_new_tokens=6)
    sampled = run_decode(model, tok, ids, mask, one, True, eos, seed=1)
    greedy = run_decode(model, tok, ids, mask, GREEDY, True, eos)
    assert torch.equal(sampled, greedy)


def test_merged_adapter_gives_unmerged_logits_and_restores_weights_bitwise(
    tiny_policy, lora_policy
):
    ids, mask = prompt_batch(tiny_policy)
    assert can_merge_exactly(lora_policy)
    before = {n: p.detach().clone() for n, p in lora_policy.named_parameters()}
    objects = {n: p for n, p in lora_policy.named_parameters()}
    with torch.no_grad():
        unmerged = lora_policy(input_ids=ids, attention_mask=mask).logits
        with lora_policy.disable_adapter():
            base = lora_policy(input_ids=ids, attention_mask=mask).logits
        with merged_lora(lora_policy) as merged_used:
            merged = lora_policy(input_ids=ids, attention_mask=mask).logits
    assert merged_used
    assert not torch.allclose(unmerged, base, atol=1e-3), "the adapter must matter here"
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    after = dict(lora_policy.named_parameters())
    assert after.keys() == before.keys()
    for name, param in after.items():
        assert param is objects[name], f"{name}: the optimizer's Parameter object is kept"
        assert torch.equal(param, before[name]), f"{name} changed"


def test_merging_is_skipped_where_it_would_not_be_exact(tiny_policy, lora_policy):
    assert not can_merge_exactly(tiny_policy.model), "no adapter: nothing to merge"
    with merged_lora(tiny_policy.model) as merged_used:
        assert not merged_used
    with lora_policy.disable_adapter():
        assert not can_merge_exactly(lora_policy), "disabled adapters must not be merged in"
    assert can_merge_exactly(lora_policy)
    q_proj = lora_policy.base_model.model.model.layers[0].self_attn.q_proj
    q_proj.base_layer.weight.data = q_proj.base_layer.weight.data.bfloat16()
    assert not can_merge_exactly(lora_policy), "bf16 would round small adapter updates away"
    q_proj.base_layer.weight.data = q_proj.base_layer.weight.data.float()
    q_proj.use_dora["default"] = True
    assert not can_merge_exactly(lora_policy)


def test_merged_sampling_equals_unmerged_sampling_greedy(tiny_policy, lora_policy):
    tok = tiny_policy.tokenizer
    merged = EngineSettings(sampler="medrl", merge_adapter=True)
    ours = generate(lora_policy, tok, PROMPTS, GREEDY, engine=merged)
    plain = generate(lora_policy, tok, PROMPTS, GREEDY)
    assert torch.equal(ours.completion_ids, plain.completion_ids)


@pytest.fixture
def mapped_lora_policy(tiny_spec):
    """The tiny model loaded as a run loads it (weights memory-mapped from its checkpoint) under
    a LoRA adapter with random B, so sampling's merge changes the weights."""
    from medrl.models import LoraAdapter, load_policy

    adapter = LoraAdapter(
        r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none"
    )
    policy = load_policy(tiny_spec, adapter)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    return policy


def test_bf16_sampling_and_passes_with_kept_copies_and_released_sources_compute_the_same(
    mapped_lora_policy,
):
    """Under autocast the engine keeps the frozen weights' copies across phases, merges LoRA
    straight into bfloat16 and releases the float32 sources' pages: the same samples, twice, and
    the same log-probs as casting everything afresh in every phase; the model keeps its own
    weights."""
    model, tok = mapped_lora_policy.model, mapped_lora_policy.tokenizer
    objects = dict(model.named_parameters())
    fresh = RolloutEngine(
        EngineSettings(keep_cast_weights=False, release_cast_sources=False), "cpu"
    )
    kept = RolloutEngine(EngineSettings(), "cpu")
    assert kept.cast_copies is not None and fresh.cast_copies is None
    rollouts, logps = {}, {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, engine in (("fresh", fresh), ("kept", kept), ("kept again", kept)):
            rollouts[name] = generate(
                model, tok, PROMPTS, SAMPLE, num_samples=2, generator_seed=3, engine=engine
            )
            with torch.no_grad(), engine.passes(model):
                logps[name] = engine.logprobs(
                    model, rollouts["fresh"], slice(None), temperature=1.0
                )
    # Copies are kept only for weights whose pages were released (mapped from the file).
    assert len(kept.cast_copies) > 0
    for name in ("kept", "kept again"):
        assert torch.equal(rollouts[name].completion_ids, rollouts["fresh"].completion_ids), name
        assert torch.equal(logps[name], logps["fresh"]), name
    for name, param in model.named_parameters():
        assert param is objects[name] and param.dtype == torch.float32, name


def sampled_rollout(policy, model):
    tok = policy.tokenizer
    rollout = generate(model, tok, PROMPTS, SAMPLE, num_samples=3, generator_seed=2, engine=MEDRL)
    for row, length in ((1, 2), (5, 4)):  # end two rows early, as an eos would
        rollout.completion_mask[row, length:] = 0
        rollout.completion_ids[row, length:] = tok.pad_token_id
    return rollout


def logprobs(model, rollout, groups, **kwargs):
    return completion_logprobs(
        model,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        rollout.completion_mask,
        prompt_groups=groups,
        **kwargs,
    )


LAYOUTS = {"shared": {"pack": False}, "packed": {"pack": True}}


@pytest.fixture
def packed_calls(monkeypatch):
    """How many times the packed path ran (a quiet fallback would otherwise pass unseen)."""
    from medrl.rollout import logprobs as logprob_passes

    calls = []
    original = logprob_passes._packed_logits
    monkeypatch.setattr(
        logprob_passes, "_packed_logits", lambda *a: calls.append(1) or original(*a)
    )
    return calls


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prompt_logprobs_equal_full_logprobs(
    tiny_policy, lora_policy, temperature, layout, packed_calls
):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    with torch.no_grad():
        full, full_entropy = logprobs(
            lora_policy, rollout, None, temperature=temperature, return_entropy=True
        )
        shared, shared_entropy = logprobs(
            lora_policy,
            rollout,
            rollout.group_index,
            temperature=temperature,
            return_entropy=True,
            chunk_size=2,
            **LAYOUTS[layout],
        )
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared_entropy, full_entropy, atol=1e-4, rtol=0)
    assert shared[rollout.completion_mask == 0].eq(0).all()
    assert shared_entropy[rollout.completion_mask == 0].eq(0).all()
    assert len(packed_calls) == (1 if layout == "packed" else 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_prompt_logprobs_give_full_gradients(tiny_policy, lora_policy, layout, packed_calls):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    weights = torch.linspace(-1, 1, rollout.completion_ids.numel()).view_as(
        rollout.completion_ids.float()
    )

    def lora_grads(groups, **kwargs):
        lora_policy.zero_grad(set_to_none=True)
        (logprobs(lora_policy, rollout, groups, **kwargs) * weights).sum().backward()
        return {n: p.grad.clone() for n, p in lora_policy.named_parameters() if p.requires_grad}

    full, shared = lora_grads(None), lora_grads(rollout.group_index, **LAYOUTS[layout])
    assert full.keys() == shared.keys() and full
    for name in full:
        torch.testing.assert_close(shared[name], full[name], atol=1e-5, rtol=1e-4)
    lora_policy.zero_grad(set_to_none=True)
    assert len(packed_calls) == (1 if layout == "packed" else 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_micro_batch_may_hold_parts_of_groups_and_one_token_completions(
    tiny_policy, lora_policy, layout, packed_calls
):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    rows = slice(2, 7)  # the end of group 0, group 1, the start of group 2
    short = dict(
        prompt_ids=rollout.prompt_ids[rows],
        prompt_mask=rollout.prompt_mask[rows],
        completion_ids=rollout.completion_ids[rows, :1],
        completion_mask=rollout.completion_mask[rows, :1],
    )
    with torch.no_grad():
        for completion in ("full", "one token"):
            kwargs = dict(short)
            if completion == "full":
                kwargs["completion_ids"] = rollout.completion_ids[rows]
                kwargs["completion_mask"] = rollout.completion_mask[rows]
            full = completion_logprobs(lora_policy, **kwargs)
            shared = completion_logprobs(
                lora_policy, **kwargs, prompt_groups=rollout.group_index[rows], **LAYOUTS[layout]
            )
            torch.testing.assert_close(shared, full, atol=1e-5, rtol=0)
    assert len(packed_calls) == (2 if layout == "packed" else 0)


def test_packed_rows_may_come_in_any_group_order_and_end_at_once(
    tiny_policy, lora_policy, packed_calls
):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    order = [4, 0, 8, 1, 5]  # groups 1, 0, 2, 0, 1: interleaved
    picked = {
        name: getattr(rollout, name)[order]
        for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
    }
    picked["completion_mask"][2, 1:] = 0  # a one-token completion
    groups = [rollout.group_index[i] for i in order]
    with torch.no_grad():
        full = completion_logprobs(lora_policy, **picked)
        packed = completion_logprobs(lora_policy, **picked, prompt_groups=groups, pack=True)
    torch.testing.assert_close(packed, full, atol=1e-5, rtol=0)
    assert packed_calls


def test_packed_logprobs_of_no_completion_tokens_are_zeros_tied_to_the_graph(
    tiny_policy, lora_policy
):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    logp = completion_logprobs(
        lora_policy,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        torch.zeros_like(rollout.completion_mask),
        prompt_groups=rollout.group_index,
        pack=True,
    )
    assert logp.eq(0).all() and logp.shape == rollout.completion_ids.shape
    logp.sum().backward()  # as the full path allows
    lora_policy.zero_grad(set_to_none=True)


def test_the_packed_layout_puts_each_prompt_once_then_every_completion_unpadded():
    # Two rows continuing one prompt (real tokens 7, 8 after a pad), completions of 3 and 1
    # real tokens; the last real token of each completion is not an input.
    prompt_ids = torch.tensor([[0, 7, 8], [0, 7, 8]])
    prompt_mask = torch.tensor([[0, 1, 1], [0, 1, 1]])
    completion_ids = torch.tensor([[21, 22, 23], [31, 0, 0]])
    completion_mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    layout = packed_layout(
        prompt_ids,
        prompt_mask,
        completion_ids,
        completion_mask,
        first_rows=torch.tensor([0]),
        row_to_prompt=torch.tensor([0, 0]),
    )
    assert layout.input_ids.tolist() == [[7, 8, 21, 22]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3]]
    # Tokens 21, 22, 23 are predicted by 8 (position 1), 21, 22; token 31 by 8 again.
    assert layout.predictors.tolist() == [1, 2, 3, 1]
    assert layout.allowed.int().tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [1, 1, 1, 1],
    ]


def test_packed_completions_of_two_prompts_see_only_their_own_prompt():
    prompt_ids = torch.tensor([[5, 6], [0, 9]])
    prompt_mask = torch.tensor([[1, 1], [0, 1]])
    completion_ids = torch.tensor([[40, 41], [50, 51]])
    completion_mask = torch.ones(2, 2, dtype=torch.long)
    layout = packed_layout(
        prompt_ids,
        prompt_mask,
        completion_ids,
        completion_mask,
        first_rows=torch.tensor([0, 1]),
        row_to_prompt=torch.tensor([0, 1]),
    )
    assert layout.input_ids.tolist() == [[5, 6, 9, 40, 50]]
    assert layout.position_ids.tolist() == [[0, 1, 0, 2, 1]]
    assert layout.predictors.tolist() == [1, 3, 2, 4]
    assert layout.allowed.int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [0, 0, 1, 0, 1],
    ]


def test_packed_logprobs_under_eager_attention_equal_full_logprobs(tiny_policy, lora_policy):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    original = lora_policy.config._attn_implementation
    lora_policy.set_attn_implementation("eager")
    try:
        assert takes_tree_mask(lora_policy)
        with torch.no_grad():
            full = logprobs(lora_policy, rollout, None)
            packed = logprobs(lora_policy, rollout, rollout.group_index, pack=True)
    finally:
        lora_policy.set_attn_implementation(original)
    torch.testing.assert_close(packed, full, atol=1e-5, rtol=0)


def test_packing_is_skipped_where_the_mask_would_not_be_honoured(
    tiny_policy, lora_policy, monkeypatch
):
    assert takes_tree_mask(lora_policy)
    config = lora_policy.config
    layers = config.num_hidden_layers
    monkeypatch.setattr(config, "layer_types", ["sliding_attention"] * layers, raising=False)
    assert not takes_tree_mask(lora_policy)
    monkeypatch.setattr(config, "layer_types", ["full_attention"] * layers, raising=False)
    monkeypatch.setattr(config, "_attn_implementation", "flash_attention_2", raising=False)
    assert not takes_tree_mask(lora_policy)


def test_completion_masks_with_holes_take_the_shared_path(tiny_policy, lora_policy):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    rollout.completion_mask[0, 1] = 0  # not a prefix: packing would drop the tokens after it
    with torch.no_grad():
        shared = logprobs(lora_policy, rollout, rollout.group_index)
        packed = logprobs(lora_policy, rollout, rollout.group_index, pack=True)
    assert torch.equal(packed, shared)


def test_rows_with_different_prompts_in_one_group_are_refused(tiny_policy, lora_policy):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    with pytest.raises(ValueError, match="different prompts in one group"):
        logprobs(lora_policy, rollout, [0] * len(rollout))


def test_medrl_engine_reports_prefill_and_decode_time(tiny_policy):
    timings: dict[str, float] = {}
    tok = tiny_policy.tokenizer
    generate(tiny_policy.model, tok, PROMPTS, SAMPLE, num_samples=2, engine=MEDRL, timings=timings)
    assert set(timings) == {"prefill", "decode"} and all(v > 0 for v in timings.values())


def test_engine_settings_reject_unknown_samplers():
    with pytest.raises(ValueError, match=r"engine.sampler=vllm: must be one of \[.medrl., .hf.\]"):
        EngineSettings(sampler="vllm")


@pytest.mark.parametrize("shared", [False, True], ids=["full", "shared"])
def test_columns_after_every_rows_end_are_skipped_without_changing_results(
    tiny_policy, lora_policy, shared
):
    rollout = sampled_rollout(tiny_policy, lora_policy)
    rollout.completion_mask[:, 3:] = 0  # every row ends within 3 tokens
    groups = rollout.group_index if shared else None
    with torch.no_grad():
        padded, padded_entropy = logprobs(lora_policy, rollout, groups, return_entropy=True)
        cut, cut_entropy = completion_logprobs(
            lora_policy,
            rollout.prompt_ids,
            rollout.prompt_mask,
            rollout.completion_ids[:, :3],
            rollout.completion_mask[:, :3],
            prompt_groups=groups,
            return_entropy=True,
        )
    assert padded.shape == rollout.completion_ids.shape
    assert torch.equal(padded[:, :3], cut) and padded[:, 3:].eq(0).all()
    assert torch.equal(padded_entropy[:, :3], cut_entropy) and padded_entropy[:, 3:].eq(0).all()


def test_a_micro_batch_too_large_for_one_packed_mask_takes_the_shared_path(
    tiny_policy, lora_policy, monkeypatch
):
    from medrl.rollout import logprobs as logprob_passes

    def refuse(*args, **kwargs):
        raise AssertionError("packed although the mask is over budget")

    rollout = sampled_rollout(tiny_policy, lora_policy)
    monkeypatch.setattr(logprob_passes, "_PACKED_MASK_ELEMENTS", 16)
    monkeypatch.setattr(logprob_passes, "_packed_logits", refuse)
    with torch.no_grad():
        shared = logprobs(lora_policy, rollout, rollout.group_index)
        packed = logprobs(lora_policy, rollout, rollout.group_index, pack=True)
    assert torch.equal(packed, shared)
