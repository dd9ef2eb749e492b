"""Weight-major Linears while sampling compute what F.linear computes, and only where routed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrl.rollout import EngineSettings, SamplingSettings, generate
from medrl.rollout.few_row_linear import few_row_linears, weight_major_linear

PROMPTS = ["Which vitamin deficiency causes scurvy?", "Name the nerve of the deltoid."]


@pytest.mark.parametrize("shape", [(3, 5), (2, 1, 5), (1, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_major_linear_equals_f_linear(shape, bias, monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(5, 7, bias=bias)
    x = torch.randn(*shape)
    products = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: products.append(a.shape) or mm(a, b))
    out = weight_major_linear(layer, x, max_rows=8)
    assert products == [(7, 5)]  # the weight is the left operand
    assert out.shape == (*shape[:-1], 7) and out.is_contiguous()
    torch.testing.assert_close(out, nn.functional.linear(x, layer.weight, layer.bias))


def test_more_rows_than_max_rows_half_precision_and_autocast_use_f_linear(monkeypatch):
    calls = []
    original = nn.functional.linear
    monkeypatch.setattr(
        nn.functional, "linear", lambda *a: calls.append(a[0].shape) or original(*a)
    )
    layer = nn.Linear(4, 3)
    weight_major_linear(layer, torch.randn(9, 4), max_rows=8)  # 9 rows > 8
    with torch.autocast("cpu", torch.bfloat16):
        weight_major_linear(layer, torch.randn(2, 4), max_rows=8)
    weight_major_linear(layer.to(torch.bfloat16), torch.randn(2, 4).bfloat16(), max_rows=8)
    assert len(calls) == 3


def test_the_context_routes_every_plain_linear_and_restores_their_forward():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    expected = model(x)
    with few_row_linears(model, max_rows=8) as routed:
        assert routed == 2 and "forward" in vars(model[0])
        torch.testing.assert_close(model(x), expected)
    assert all("forward" not in vars(layer) for layer in model)
    with pytest.raises(RuntimeError, match="inside"), few_row_linears(model, max_rows=8):
        raise RuntimeError("inside")
    assert all("forward" not in vars(layer) for layer in model)
    with few_row_linears(model, max_rows=0) as routed:
        assert routed == 0 and "forward" not in vars(model[0])
    hooked = model[0].forward = lambda x: x  # e.g. accelerate's hook: left as it is
    with few_row_linears(model, max_rows=8) as routed:
        assert routed == 1 and vars(model[0])["forward"] is hooked
    assert vars(model[0])["forward"] is hooked


def test_sampling_with_weight_major_linears_gives_the_same_completions(tiny_policy, monkeypatch):
    from medrl.rollout import few_row_linear

    calls = []
    original = few_row_linear.weight_major_linear
    monkeypatch.setattr(
        few_row_linear,
        "weight_major_linear",
        lambda module, x, max_rows: calls.append(x.shape) or original(module, x, max_rows),
    )
    tok = tiny_policy.tokenizer
    settings = SamplingSettings(temperature=1.0, max_new_tokens=8)

    def sample(rows: int):
        engine = EngineSettings(sampler="medrl", few_row_linear_rows=rows)
        return generate(
            tiny_policy.model, tok, PROMPTS, settings, 3, generator_seed=5, engine=engine
        )

    routed = sample(64)
    assert any(shape[1] == 1 for shape in calls)  # the one-token decode steps went through it
    calls.clear()
    plain = sample(0)
    assert not calls
    assert torch.equal(routed.completion_ids, plain.completion_ids)
    assert all("forward" not in vars(m) for m in tiny_policy.model.modules())


def test_engine_settings_reject_a_negative_row_limit():
    with pytest.raises(ValueError, match="few_row_linear_rows must be >= 0"):
        EngineSettings(few_row_linear_rows=-1)
