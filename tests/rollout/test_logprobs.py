"""completion_logprobs equals a naive unpadded per-row log-softmax, with gradients and peft."""

from __future__ import annotations

import copy

import pytest
import torch

from medrl.models import LoraAdapter, apply_adapter
from medrl.rollout import SamplingSettings, completion_logprobs, generate

PROMPTS = [
    "Which vitamin deficiency causes scurvy?",
    "A",
    "Name the nerve that supplies the deltoid muscle and the skin over it.",
]
SAMPLE = SamplingSettings(max_new_tokens=5)


def naive_logprobs(model, rollout, temperature: float = 1.0) -> torch.Tensor:
    """Each row alone, without padding: full logits, full log-softmax, then pick the targets."""
    out = torch.zeros(rollout.completion_ids.shape)
    for row in range(len(rollout)):
        prompt = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()]
        length = rollout.num_tokens[row]
        completion = rollout.completion_ids[row, :length]
        ids = torch.cat([prompt, completion]).unsqueeze(0)  # [1, L]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float() / temperature  # [L, V]
        logp = torch.log_softmax(logits, dim=-1)  # [L, V]
        start = prompt.numel() - 1
        predicting = logp[start : start + length]  # [length, V]
        out[row, :length] = predicting.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    return out


def masked_rollout(policy):
    """A sampled rollout whose rows have different prompt and completion lengths."""
    rollout = generate(
        policy.model, policy.tokenizer, PROMPTS, SAMPLE, num_samples=2, generator_seed=0
    )
    # Cut two rows short, as an eos would, so masked completion positions are covered too.
    for row, length in ((1, 2), (4, 4)):
        rollout.completion_mask[row, length:] = 0
        rollout.completion_ids[row, length:] = policy.tokenizer.pad_token_id
        rollout.num_tokens[row] = length
    return rollout


@pytest.mark.parametrize(("chunk_size", "temperature"), [(None, 1.0), (1, 1.0), (4, 0.7)])
def test_logprobs_match_a_naive_unpadded_computation(tiny_policy, chunk_size, temperature):
    rollout = masked_rollout(tiny_policy)
    assert rollout.prompt_mask.eq(0).any(), "some prompts must be left-padded"
    with torch.no_grad():
        logp = completion_logprobs(
            tiny_policy.model,
            rollout.prompt_ids,
            rollout.prompt_mask,
            rollout.completion_ids,
            rollout.completion_mask,
            chunk_size=chunk_size,
            temperature=temperature,
        )
    expected = naive_logprobs(tiny_policy.model, rollout, temperature)
    assert logp.shape == rollout.completion_ids.shape and logp.dtype == torch.float32
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    assert logp[rollout.completion_mask == 0].eq(0).all()


def test_gradients_flow_to_the_weights(tiny_policy):
    model = tiny_policy.model
    rollout = masked_rollout(tiny_policy)
    model.zero_grad()
    logp = completion_logprobs(
        model,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        rollout.completion_mask,
        chunk_size=2,
    )
    logp.sum().backward()
    grad = model.model.embed_tokens.weight.grad
    assert grad is not None and torch.count_nonzero(grad) > 0
    model.zero_grad(set_to_none=True)


def test_a_peft_wrapped_model_generates_and_scores(tiny_policy):
    base = copy.deepcopy(tiny_policy.model)  # peft injects layers in place: keep the fixture
    model = apply_adapter(base, LoraAdapter(r=2, alpha=4, target_modules=["q_proj"]))
    tok = tiny_policy.tokenizer
    rollout = generate(model, tok, PROMPTS[:2], SAMPLE, num_samples=2, generator_seed=0)
    logp = completion_logprobs(
        model,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        rollout.completion_mask,
    )
    # LoRA's B starts at zero, so the adapted model scores exactly like its base.
    torch.testing.assert_close(
        logp.detach(), naive_logprobs(tiny_policy.model, rollout), atol=1e-5, rtol=0
    )
    logp.sum().backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
