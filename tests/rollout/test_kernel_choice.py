"""cpu_linear=auto: the Linear kernel of each phase is the one that ran the model's own
products faster here, timed once per process; never the slower one by default."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from medrl.rollout import EngineSettings, RolloutEngine, kernel_choice
from medrl.rollout.onednn_linear import onednn_linear_supported

pytestmark = pytest.mark.skipif(
    not onednn_linear_supported(), reason="this torch build has no oneDNN linear"
)


def three_by_four() -> nn.Module:
    """Three Linear(4, 4) and one Linear(4, 8), float32."""
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 8))


def routed(model: nn.Module) -> bool:
    return any("forward" in vars(m) for m in model.modules() if type(m) is nn.Linear)


def test_every_distinct_shape_is_timed_once_and_weighted_by_its_count(monkeypatch):
    calls = []
    monkeypatch.setattr(kernel_choice, "_best_seconds", lambda run: calls.append(run) or 1.0)
    weights = kernel_choice.float32_linear_weights(three_by_four())
    assert {shape: count for shape, (_, count) in weights.items()} == {(4, 4): 3, (8, 4): 1}
    # forward only: 3 x 1 s + 1 x 1 s per kernel, two shapes timed per kernel
    assert kernel_choice.time_linears(weights, rows=2, backward=False) == (4.0, 4.0)
    assert len(calls) == 4
    # with the input-gradient products: twice that
    assert kernel_choice.time_linears(weights, rows=2, backward=True) == (8.0, 8.0)


def test_both_kernels_time_real_products():
    weights = kernel_choice.float32_linear_weights(three_by_four())
    torch_s, onednn_s = kernel_choice.time_linears(weights, rows=3, backward=True)
    assert 0 < torch_s < 1 and 0 < onednn_s < 1


@pytest.mark.parametrize("onednn_faster", [True, False])
def test_auto_routes_linears_only_where_onednn_was_faster(monkeypatch, caplog, onednn_faster):
    timings = (2.0, 1.0) if onednn_faster else (1.0, 2.0)  # (torch s, oneDNN s)
    calls = []
    monkeypatch.setattr(kernel_choice, "CHOOSER", kernel_choice.LinearChooser())
    monkeypatch.setattr(
        kernel_choice, "time_linears", lambda *args, **kw: calls.append(args) or timings
    )
    model = three_by_four()
    engine = RolloutEngine(EngineSettings(cpu_linear="auto"), "cpu")
    with caplog.at_level(logging.INFO, logger="medrl.rollout.kernel_choice"):
        with engine.passes(model):
            assert routed(model) == onednn_faster
        with engine.passes(model):  # decided once: not timed again
            pass
    assert len(calls) == 1 and calls[0][1] == kernel_choice.PASS_ROWS
    winner = "onednn" if onednn_faster else "torch"
    assert f"cpu_linear=auto, passes (256 rows): {winner}" in caplog.text
    with engine.sampling(model, rows=16):  # another phase, another decision
        assert routed(model) == onednn_faster
    assert len(calls) == 2 and calls[1][1] == 16


def test_a_model_without_float32_linears_is_not_timed(monkeypatch):
    monkeypatch.setattr(kernel_choice, "time_linears", lambda *a, **k: pytest.fail("timed"))
    chooser = kernel_choice.LinearChooser()
    assert not chooser.onednn_wins(three_by_four().to(torch.bfloat16), "passes", 256)


def test_sharded_weights_are_not_timed(monkeypatch):
    """Under FSDP a process holds a flat 1-D shard of each weight: nothing there to time or
    route (onednn_linears stays off for sharded weights)."""
    monkeypatch.setattr(kernel_choice, "time_linears", lambda *a, **k: pytest.fail("timed"))
    model = three_by_four()
    model[0].weight = nn.Parameter(model[0].weight.detach().flatten()[:8])  # a shard
    weights = kernel_choice.float32_linear_weights(model)
    assert {shape: count for shape, (_, count) in weights.items()} == {(4, 4): 2, (8, 4): 1}
    monkeypatch.setattr(kernel_choice, "weights_sharded", lambda m: True)
    assert not kernel_choice.LinearChooser().onednn_wins(three_by_four(), "passes", 256)
