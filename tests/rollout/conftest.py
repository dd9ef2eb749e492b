"""Fixtures of the rollout tests: a LoRA policy's sampled rollout and its packed log-prob pass."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model

from medrl.rollout import SamplingSettings, completion_logprobs, generate

PACKED_PROMPTS = ["Which vitamin deficiency causes scurvy?", "Name the nerve of the deltoid."]


@pytest.fixture
def lora_rollout(tiny_policy) -> SimpleNamespace:
    """A LoRA copy of the tiny model (random B, so the adapter matters), 2 prompts x 2 of its
    samples (up to 5 tokens) and per-token weights that make a loss of the log-probs."""
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    model = get_peft_model(copy.deepcopy(tiny_policy.model), config).eval()
    rollout = generate(
        model,
        tiny_policy.tokenizer,
        PACKED_PROMPTS,
        SamplingSettings(max_new_tokens=5),
        2,
        generator_seed=3,
    )
    weights = torch.linspace(-1, 1, rollout.completion_ids.numel()).view(
        rollout.completion_ids.shape
    )
    return SimpleNamespace(model=model, rollout=rollout, weights=weights)


@pytest.fixture
def packed_pass(lora_rollout) -> Callable[..., tuple]:
    """pass(**completion_logprobs kwargs) -> (log-probs, entropies, LoRA gradients) of the
    packed pass over the rollout, gradients of the weighted log-prob sum."""

    def run(**kwargs):
        model, rollout = lora_rollout.model, lora_rollout.rollout
        model.zero_grad(set_to_none=True)
        logp, entropy = completion_logprobs(
            model,
            rollout.prompt_ids,
            rollout.prompt_mask,
            rollout.completion_ids,
            rollout.completion_mask,
            prompt_groups=rollout.group_index,
            pack=True,
            return_entropy=True,
            **kwargs,
        )
        (logp * lora_rollout.weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return logp.detach(), entropy, grads

    return run


def assert_same_pass(ours: tuple, plain: tuple) -> None:
    """Two packed_pass results agree to float32 rounding, with gradients for every adapter."""
    (logp, entropy, grads), (plain_logp, plain_entropy, plain_grads) = ours, plain
    torch.testing.assert_close(logp, plain_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, plain_entropy, atol=1e-4, rtol=0)
    assert grads.keys() == plain_grads.keys() and grads
    for name in plain_grads:
        torch.testing.assert_close(grads[name], plain_grads[name], atol=1e-5, rtol=1e-4)


@pytest.fixture
def same_pass() -> Callable[[tuple, tuple], None]:
    return assert_same_pass
