"""Log-probs from hidden states by chunks equal those from the full logits, and keep less."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medrl.rollout import SamplingSettings, completion_logprobs, generate, scoring
from medrl.rollout import fused_head as module
from medrl.rollout.fused_head import fused_head_supported, head_logprobs
from medrl.rollout.onednn_linear import onednn_linears

PROMPTS = ["Which vitamin deficiency causes scurvy?", "Name the nerve of the deltoid."]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 rows for a 10-word vocabulary, so a handful of rows spans several."""
    monkeypatch.setattr(module, "HEAD_CHUNK_ELEMENTS", 30)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_head_logprobs_equal_the_gathered_log_softmax(temperature, small_chunks):
    torch.manual_seed(0)
    head = nn.Linear(4, 10, bias=False).double()
    hidden = torch.randn(8, 4, dtype=torch.float64)
    targets = torch.randint(0, 10, (8,))
    logp, entropy = head_logprobs(hidden, head, targets, temperature)
    logits = head(hidden) / temperature
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
    torch.testing.assert_close(logp, expected)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1))
    assert not entropy.requires_grad


def test_head_logprobs_gradients_to_hidden_and_weight(small_chunks):
    torch.manual_seed(0)
    weight = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    hidden = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 10, (7,))

    def logp(h, w):
        head = SimpleNamespace(weight=w)  # what head_logprobs reads of the layer
        return head_logprobs(h, head, targets, 0.8)[0]

    assert torch.autograd.gradcheck(logp, (hidden, weight))


def test_head_logprobs_keep_no_vocabulary_sized_tensor():
    torch.manual_seed(0)
    head = nn.Linear(4, 50, bias=False)
    hidden = torch.randn(6, 4, requires_grad=True)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.shape) or t, lambda t: t):
        head_logprobs(hidden, head, torch.randint(0, 50, (6,)))
    assert (6, 50) not in kept and (6, 4) in kept


def test_models_with_scaled_or_biased_logits_are_not_fused(tiny_policy):
    assert fused_head_supported(tiny_policy.model)

    def stub(model_type, bias=False, **config):
        head = nn.Linear(4, 10, bias=bias)
        return SimpleNamespace(
            config=SimpleNamespace(model_type=model_type, **config),
            get_output_embeddings=lambda: head,
            modules=lambda: iter([head]),
        )

    assert fused_head_supported(stub("llama"))
    assert not fused_head_supported(stub("gemma2", final_logit_softcapping=30.0))
    assert not fused_head_supported(stub("cohere"))
    assert not fused_head_supported(stub("llama", bias=True))


@pytest.mark.parametrize("onednn", [False, True], ids=["f-linear", "onednn"])
def test_fused_packed_logprobs_and_gradients_equal_the_logits_path(
    lora_rollout, packed_pass, same_pass, monkeypatch, onednn
):
    fused = []
    original = scoring.head_logprobs
    monkeypatch.setattr(scoring, "head_logprobs", lambda *a: fused.append(a[4]) or original(*a))
    head = lora_rollout.model.get_output_embeddings()

    def run(fused_head: bool):
        with onednn_linears(lora_rollout.model, enabled=onednn):
            result = packed_pass(temperature=0.9, fused_head=fused_head)
            assert ("forward" in vars(head)) == onednn  # the identity swap put it back
        return result

    ours, plain = run(True), run(False)
    assert fused == [onednn]  # the fused path ran once, multiplying as the layer was routed
    assert all("forward" not in vars(m) for m in lora_rollout.model.modules())
    same_pass(ours, plain)


def test_full_finetuning_gets_the_tied_head_weights_gradient(tiny_policy):
    model = copy.deepcopy(tiny_policy.model).train(False)
    rollout = generate(
        model,
        tiny_policy.tokenizer,
        PROMPTS[:1],
        SamplingSettings(max_new_tokens=4),
        2,
        generator_seed=1,
    )

    def head_grad(fused_head: bool):
        model.zero_grad(set_to_none=True)
        completion_logprobs(
            model,
            rollout.prompt_ids,
            rollout.prompt_mask,
            rollout.completion_ids,
            rollout.completion_mask,
            prompt_groups=rollout.group_index,
            pack=True,
            fused_head=fused_head,
        ).sum().backward()
        return model.get_output_embeddings().weight.grad.clone()

    torch.testing.assert_close(head_grad(True), head_grad(False), atol=1e-5, rtol=1e-4)
