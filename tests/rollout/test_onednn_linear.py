"""oneDNN Linears compute what F.linear computes, forward and backward, and only where routed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrl.rollout import EngineSettings, SamplingSettings, generate
from medrl.rollout import onednn_linear as module
from medrl.rollout.onednn_linear import onednn_linear, onednn_linear_supported, onednn_linears

pytestmark = pytest.mark.skipif(
    not onednn_linear_supported(), reason="this torch build has no oneDNN linear"
)

PROMPTS = ["Which vitamin deficiency causes scurvy?", "Name the nerve of the deltoid."]


@pytest.fixture
def onednn_calls(monkeypatch):
    """The input shapes of every product oneDNN ran (a quiet fallback would pass unseen)."""
    calls = []
    original = module._matmul
    monkeypatch.setattr(
        module, "_matmul", lambda x, w, b: calls.append(tuple(x.shape)) or original(x, w, b)
    )
    return calls


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 5), (1, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_equals_f_linear(shape, bias, onednn_calls):
    torch.manual_seed(0)
    layer = nn.Linear(5, 7, bias=bias)
    x = torch.randn(*shape)
    out = onednn_linear(x, layer.weight, layer.bias)
    rows = x.numel() // 5
    assert onednn_calls == [(rows, 5)]
    assert out.shape == (*shape[:-1], 7)
    torch.testing.assert_close(out, nn.functional.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("trainable", ["input", "weight", "all"])
def test_onednn_linear_gradients_equal_f_linears(trainable, onednn_calls):
    torch.manual_seed(0)
    weight, bias = torch.randn(7, 5), torch.randn(7)
    x = torch.randn(2, 3, 5)
    upstream = torch.randn(2, 3, 7)

    def grads(linear):
        leaves = [
            t.clone().requires_grad_(trainable in (name, "all"))
            for t, name in ((x, "input"), (weight, "weight"), (bias, "weight"))
        ]
        (linear(*leaves) * upstream).sum().backward()
        return [leaf.grad for leaf in leaves]

    ours, reference = grads(onednn_linear), grads(nn.functional.linear)
    for got, expected in zip(ours, reference, strict=True):
        assert (got is None) == (expected is None)
        if expected is not None:
            torch.testing.assert_close(got, expected)
    # The forward, plus the input's gradient when the input trains: both products in oneDNN.
    assert onednn_calls == [(6, 5)] + ([(6, 7)] if trainable != "weight" else [])


def test_a_frozen_weight_keeps_no_copy_of_the_input_for_backward():
    weight = torch.randn(7, 5)  # frozen, as a LoRA base layer's
    x = torch.randn(3, 5, requires_grad=True)
    out = onednn_linear(x, weight)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert len(saved) == 1 and saved[0].data_ptr() == weight.data_ptr()


def test_other_dtypes_autocast_and_empty_inputs_use_f_linear(onednn_calls):
    layer = nn.Linear(4, 3)
    with torch.autocast("cpu", torch.bfloat16):
        onednn_linear(torch.randn(2, 4), layer.weight, layer.bias)
    half = layer.to(torch.bfloat16)
    onednn_linear(torch.randn(2, 4).bfloat16(), half.weight, half.bias)
    assert onednn_linear(torch.randn(0, 4).bfloat16(), half.weight).shape == (0, 3)
    assert onednn_calls == []


def test_without_a_graph_to_record_the_product_skips_the_autograd_function(
    monkeypatch, onednn_calls
):
    """Sampling and the reference pass need no graph: the product runs alone (same numbers),
    and the autograd Function only where some operand requires grad under grad mode."""
    applied = []
    original = module._OneDnnLinearFunction.apply
    monkeypatch.setattr(
        module._OneDnnLinearFunction, "apply", lambda *a: applied.append(1) or original(*a)
    )
    layer = nn.Linear(5, 7)
    x = torch.randn(2, 3, 5)
    expected = nn.functional.linear(x, layer.weight, layer.bias)
    with torch.no_grad():
        torch.testing.assert_close(onednn_linear(x, layer.weight, layer.bias), expected)
    frozen = layer.weight.detach(), layer.bias.detach()
    torch.testing.assert_close(onednn_linear(x, *frozen), expected)
    assert applied == [] and len(onednn_calls) == 2
    out = onednn_linear(x, layer.weight, layer.bias)  # trainable weight: recorded
    assert applied == [1] and out.grad_fn is not None


def test_the_context_routes_only_the_shapes_asked_for(onednn_calls):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    with onednn_linears(model, shapes={(2, 4)}) as routed:
        assert routed == 1 and "forward" in vars(model[2]) and "forward" not in vars(model[0])
        model(x)
    assert onednn_calls == [(3, 4)]
    with onednn_linears(model, shapes=frozenset()) as routed:
        assert routed == 0
    with onednn_linears(model, shapes=None) as routed:
        assert routed == 3


@pytest.mark.skipif(not module.prepacking_supported(), reason="no oneDNN weight prepacking")
def test_prepacked_sampling_products_equal_f_linear_and_follow_weight_changes(monkeypatch):
    """With prepack_rows, a product without a graph reads a oneDNN-layout copy of the weight,
    made once and made again only when the weight changes in place (e.g. LoRA merged); one
    that records a graph still takes the plain route, and every forward is back on exit."""
    packs = []
    original = module.prepacked_weight
    monkeypatch.setattr(module, "prepacked_weight", lambda w, r: packs.append(r) or original(w, r))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3, bias=False))
    x = torch.randn(4, 2, 6)
    with onednn_linears(model, prepack_rows=8):
        with torch.no_grad():
            expected = nn.functional.linear(
                nn.functional.linear(x, *model[0].parameters()), model[1].weight
            )
            torch.testing.assert_close(model(x), expected)
            model(x[:1])  # another row count reads the same copies
            assert packs == [8, 8]
            model[1].weight.mul_(2.0)  # an in-place change: that Linear packs again
            torch.testing.assert_close(model(x), 2 * expected)
        assert packs == [8, 8, 8]
        model(x).sum().backward()  # trainable weights record a graph: not from the copies
        assert packs == [8, 8, 8] and model[0].weight.grad is not None
    assert all("forward" not in vars(layer) for layer in model)


def test_the_context_routes_every_plain_linear_and_restores_their_forward(onednn_calls):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    expected = model(x)
    with onednn_linears(model) as routed:
        assert routed == 2 and "forward" in vars(model[0])
        torch.testing.assert_close(model(x), expected)
    assert len(onednn_calls) == 2
    assert all("forward" not in vars(layer) for layer in model)
    with pytest.raises(RuntimeError, match="inside"), onednn_linears(model):
        raise RuntimeError("inside")
    assert all("forward" not in vars(layer) for layer in model)
    with onednn_linears(model, enabled=False) as routed:
        assert routed == 0 and "forward" not in vars(model[0])
    hooked = model[0].forward = lambda x: x  # e.g. accelerate's hook: left as it is
    with onednn_linears(model) as routed:
        assert routed == 1 and vars(model[0])["forward"] is hooked
    assert vars(model[0])["forward"] is hooked


def test_a_backward_after_the_block_still_runs_the_onednn_products(onednn_calls):
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    with onednn_linears(model):
        loss = model(x).square().sum()
    loss.backward()  # as Lightning's automatic optimization does, outside the forward
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().sum().backward()
    for got, expected in zip(ours, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(got, expected)
    assert len(onednn_calls) == 3  # two forwards, the second layer's input gradient


def test_sampling_with_onednn_linears_gives_the_same_completions(tiny_policy, onednn_calls):
    tok = tiny_policy.tokenizer
    settings = SamplingSettings(temperature=1.0, max_new_tokens=8)

    def sample(cpu_linear: str):
        engine = EngineSettings(sampler="medrl", cpu_linear=cpu_linear)
        return generate(
            tiny_policy.model, tok, PROMPTS, settings, 3, generator_seed=5, engine=engine
        )

    routed = sample("onednn")
    assert any(shape[0] == 6 for shape in onednn_calls)  # the one-token decode steps of 6 rows
    onednn_calls.clear()
    plain = sample("torch")
    assert not onednn_calls
    assert torch.equal(routed.completion_ids, plain.completion_ids)
    assert all("forward" not in vars(m) for m in tiny_policy.model.modules())


def test_lora_logprobs_and_gradients_through_onednn_equal_f_linears(
    lora_rollout, packed_pass, same_pass, onednn_calls
):
    with onednn_linears(lora_rollout.model):
        ours = packed_pass()
    assert onednn_calls  # the routed pass went through oneDNN
    onednn_calls.clear()
    plain = packed_pass()
    assert not onednn_calls
    same_pass(ours, plain)


def test_engine_settings_reject_an_unknown_cpu_linear():
    with pytest.raises(ValueError, match=r"engine.cpu_linear=mkl: must be one of"):
        EngineSettings(cpu_linear="mkl")
