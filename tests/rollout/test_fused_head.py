"""Log-probs from hidden states by chunks equal those from the full logits, and keep less;
their entropies' gradients equal plain autograd's, and agree across the log-prob paths."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medrl.rollout import SamplingSettings, completion_logprobs, generate
from medrl.rollout import fused_head as module
from medrl.rollout import logprobs as logprob_passes
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
    assert entropy.requires_grad  # to the head's weight: an entropy bonus trains through it


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
    original = logprob_passes.head_logprobs
    monkeypatch.setattr(
        logprob_passes, "head_logprobs", lambda *a: fused.append(a[4]) or original(*a)
    )
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


# --- the entropy's gradient -------------------------------------------------------------------


def plain_head(hidden, weight, targets, temperature):
    """The straightforward computation: full logits, log_softmax, entropy -sum p log p."""
    logp = torch.log_softmax(hidden @ weight.T / temperature, dim=-1)  # [K, V]
    return logp.gather(-1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


def head_gradients(head_fn, used, hidden, weight, targets, temperature, trains=(True, True)):
    """Gradients to (hidden, weight) of sum(a * logp) + sum(b * entropy), with the terms `used`."""
    torch.manual_seed(5)
    a, b = (
        torch.randn(len(targets), dtype=hidden.dtype),
        torch.randn(len(targets), dtype=hidden.dtype),
    )
    hidden = hidden.detach().clone().requires_grad_(trains[0])
    weight = weight.detach().clone().requires_grad_(trains[1])
    logp, entropy = head_fn(hidden, weight, targets, temperature)
    loss = 0.0
    if used in ("both", "logp"):
        loss = loss + (a * logp).sum()
    if used in ("both", "entropy"):
        loss = loss + (b * entropy).sum()
    inputs = [x for x in (hidden, weight) if x.requires_grad]
    return torch.autograd.grad(loss, inputs)


def fused(onednn: bool = False):
    def run(hidden, weight, targets, temperature):
        head = SimpleNamespace(weight=weight)  # what head_logprobs reads of the layer
        return head_logprobs(hidden, head, targets, temperature, onednn)

    return run


@pytest.mark.parametrize("used", ["both", "entropy", "logp"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_head_entropy_gradients_equal_plain_autograds(used, temperature, small_chunks):
    torch.manual_seed(0)
    hidden = torch.randn(8, 4, dtype=torch.float64)  # 8 rows: chunks of 3, 3 and 2
    weight = torch.randn(10, 4, dtype=torch.float64)
    targets = torch.randint(0, 10, (8,))
    ours = head_gradients(fused(), used, hidden, weight, targets, temperature)
    plain = head_gradients(plain_head, used, hidden, weight, targets, temperature)
    assert len(ours) == 2
    for mine, reference in zip(ours, plain, strict=True):
        assert mine.abs().max() > 0
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("trains", [(True, False), (False, True)], ids=["hidden", "weight"])
def test_head_entropy_gradients_with_one_input_training(trains, small_chunks):
    torch.manual_seed(1)
    hidden = torch.randn(7, 4, dtype=torch.float64)
    weight = torch.randn(10, 4, dtype=torch.float64)
    targets = torch.randint(0, 10, (7,))
    args = (hidden, weight, targets, 0.8, trains)
    (ours,) = head_gradients(fused(), "both", *args)
    (plain,) = head_gradients(plain_head, "both", *args)
    torch.testing.assert_close(ours, plain, rtol=1e-10, atol=1e-12)


def test_head_logprobs_and_entropy_pass_gradcheck(small_chunks):
    torch.manual_seed(2)
    weight = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    hidden = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 10, (7,))
    a, b = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)

    def both(h, w):  # each output alone: the other's gradient arrives as None
        return fused()(h, w, targets, 0.8)

    def combined(h, w):  # both gradient terms in one backward
        logp, entropy = fused()(h, w, targets, 0.8)
        return (a * logp + b * entropy).sum()

    assert torch.autograd.gradcheck(both, (hidden, weight))
    assert torch.autograd.gradcheck(combined, (hidden, weight))


@pytest.mark.parametrize("onednn", [False, True], ids=["f-linear", "onednn"])
def test_float32_head_entropy_gradients_match_float64_autograd(onednn, small_chunks):
    torch.manual_seed(3)
    hidden = torch.randn(8, 4, dtype=torch.float64)
    weight = torch.randn(10, 4, dtype=torch.float64)
    targets = torch.randint(0, 10, (8,))
    ours = head_gradients(fused(onednn), "both", hidden.float(), weight.float(), targets, 0.9)
    plain = head_gradients(plain_head, "both", hidden, weight, targets, 0.9)
    for mine, reference in zip(ours, plain, strict=True):
        assert mine.dtype == torch.float32
        torch.testing.assert_close(mine.double(), reference, atol=1e-5, rtol=1e-4)


SCORING_PATHS = {
    "full": dict(prompt_groups=None),
    "shared": dict(pack=False),
    "packed": dict(pack=True),
    "packed+fused": dict(pack=True, fused_head=True),
}


@pytest.fixture
def logprob_path_calls(monkeypatch):
    """Which of the log-prob passes ran (a quiet fallback to another path would pass unseen)."""
    calls = []
    for name in ("_full_logits", "_shared_prompt_logits", "_packed_logits", "head_logprobs"):
        original = getattr(logprob_passes, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(logprob_passes, name, spy)
    return calls


RAN = {
    "full": ["_full_logits"],
    "shared": ["_shared_prompt_logits"],
    "packed": ["_packed_logits"],
    "packed+fused": ["head_logprobs"],
}


def scored(lora_rollout, path, entropy_grad=True):
    """completion_logprobs over the LoRA rollout, row 1 cut to 2 tokens (as an eos would)."""
    rollout = lora_rollout.rollout
    completion_mask = rollout.completion_mask.clone()
    assert completion_mask[1].sum() > 2
    completion_mask[1, 2:] = 0
    kwargs = dict(prompt_groups=rollout.group_index) | SCORING_PATHS[path]
    return completion_logprobs(
        lora_rollout.model,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        completion_mask,
        temperature=0.9,
        return_entropy=True,
        entropy_grad=entropy_grad,
        **kwargs,
    ), completion_mask


def test_entropy_gradients_agree_across_the_scoring_paths(lora_rollout, logprob_path_calls):
    model = lora_rollout.model
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    entropies, entropy_grads, both_grads = {}, {}, {}
    for path in SCORING_PATHS:
        logprob_path_calls.clear()
        (logp, entropy), mask = scored(lora_rollout, path)
        assert logprob_path_calls == RAN[path]
        assert entropy.requires_grad and entropy.dtype == torch.float32
        assert entropy[mask == 0].eq(0).all()
        entropies[path] = entropy.detach()
        packed = path.startswith("packed")  # both gradient terms of the fused head's backward
        grads = torch.autograd.grad(entropy.sum(), list(params.values()), retain_graph=packed)
        entropy_grads[path] = dict(zip(params, grads, strict=True))
        if packed:
            objective = entropy.sum() + (logp * lora_rollout.weights).sum()
            grads = torch.autograd.grad(objective, list(params.values()))
            both_grads[path] = dict(zip(params, grads, strict=True))
    assert params and all(g.abs().max() > 0 for g in entropy_grads["full"].values())
    for path in SCORING_PATHS:
        torch.testing.assert_close(entropies[path], entropies["full"], atol=1e-4, rtol=0)
        for name in params:
            torch.testing.assert_close(
                entropy_grads[path][name],
                entropy_grads["full"][name],
                atol=1e-5,
                rtol=1e-4,
                msg=lambda m, path=path, name=name: f"{path}, {name}: {m}",
            )
    for name in params:
        torch.testing.assert_close(
            both_grads["packed+fused"][name], both_grads["packed"][name], atol=1e-5, rtol=1e-4
        )


def test_without_entropy_grad_the_entropy_is_detached(lora_rollout, logprob_path_calls):
    for path in SCORING_PATHS:
        logprob_path_calls.clear()
        (logp, entropy), _ = scored(lora_rollout, path, entropy_grad=False)
        assert logprob_path_calls == RAN[path]
        assert logp.requires_grad and not entropy.requires_grad, path
