"""cpu_linear=auto: each weight shape's Linears run in the kernel that ran the model's own
products of that shape faster here, timed once per phase and process; never the slower one by
default."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from medrl.rollout import EngineSettings, RolloutEngine, kernel_choice
from medrl.rollout.decision_store import default_store_path
from medrl.rollout.onednn_linear import onednn_linear_supported

pytestmark = pytest.mark.skipif(
    not onednn_linear_supported(), reason="this torch build has no oneDNN linear"
)


def three_by_four() -> nn.Module:
    """Three Linear(4, 4) and one Linear(4, 8), float32."""
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 8))


def test_every_distinct_shape_is_timed_once_and_weighted_by_its_count(monkeypatch):
    calls = []
    monkeypatch.setattr(kernel_choice, "_best_seconds", lambda run: calls.append(run) or 1.0)
    weights = kernel_choice.float32_linear_weights(three_by_four())
    assert {shape: count for shape, (_, count) in weights.items()} == {(4, 4): 3, (8, 4): 1}
    # forward only: 3 x 1 s for the (4, 4) shape, 1 x 1 s for (8, 4), in each kernel
    shapes = kernel_choice.time_linears(weights, rows=2, backward=False)
    assert [(s.shape, s.count, s.torch_seconds, s.onednn_seconds) for s in shapes] == [
        ((4, 4), 3, 3.0, 3.0),
        ((8, 4), 1, 1.0, 1.0),
    ]
    assert len(calls) == 4
    # with the input-gradient products: twice that
    shapes = kernel_choice.time_linears(weights, rows=2, backward=True)
    assert [(s.torch_seconds, s.onednn_seconds) for s in shapes] == [(6.0, 6.0), (2.0, 2.0)]


def test_both_kernels_time_real_products():
    weights = kernel_choice.float32_linear_weights(three_by_four())
    for timing in kernel_choice.time_linears(weights, rows=3, backward=True):
        assert 0 < timing.torch_seconds < 1 and 0 < timing.onednn_seconds < 1


def test_each_shape_takes_its_faster_kernel_and_the_total_is_the_sum_of_the_best():
    timing = kernel_choice.LinearTiming(
        "sampling",
        16,
        (
            kernel_choice.ShapeTiming((4, 4), 3, torch_seconds=0.003, onednn_seconds=0.006),
            kernel_choice.ShapeTiming((8, 4), 1, torch_seconds=0.030, onednn_seconds=0.010),
        ),
    )
    assert timing.onednn_shapes == {(8, 4)}
    assert timing.torch_seconds == pytest.approx(0.033)
    assert timing.onednn_seconds == pytest.approx(0.016)
    assert timing.chosen_seconds == pytest.approx(0.013)  # better than either kernel alone
    assert timing.describe() == (
        "cpu_linear=auto, sampling (16 rows): oneDNN for [4->8 x1], torch/MKL for [4->4 x3]: "
        "13.00 ms per round of the model's Linears as chosen "
        "(torch/MKL alone 33.00 ms, oneDNN alone 16.00 ms)"
    )


def routed_shapes(model: nn.Module) -> set[tuple[int, int]]:
    return {
        tuple(m.weight.shape)
        for m in model.modules()
        if type(m) is nn.Linear and "forward" in vars(m)
    }


@pytest.mark.parametrize(
    ("onednn_seconds", "expected"),
    [
        ((1.0, 1.0), {(4, 4), (8, 4)}),  # oneDNN faster on both shapes
        ((3.0, 3.0), set()),  # slower on both: nothing routed
        ((1.0, 3.0), {(4, 4)}),  # faster on one shape only: only its Linears routed
    ],
)
def test_auto_routes_only_the_shapes_where_onednn_was_faster(
    monkeypatch, caplog, onednn_seconds, expected
):
    def fake_timing(weights, rows, backward, prepack=False):
        calls.append(rows)
        return tuple(
            kernel_choice.ShapeTiming(shape, count, 2.0, seconds)
            for (shape, (_, count)), seconds in zip(weights.items(), onednn_seconds, strict=True)
        )

    calls = []
    monkeypatch.setattr(kernel_choice, "CHOOSER", kernel_choice.LinearChooser())
    monkeypatch.setattr(kernel_choice, "time_linears", fake_timing)
    model = three_by_four()
    engine = RolloutEngine(EngineSettings(cpu_linear="auto"), "cpu")
    with caplog.at_level(logging.INFO, logger="medrl.rollout.kernel_choice"):
        with engine.passes(model):
            assert routed_shapes(model) == expected
        with engine.passes(model):  # decided once: not timed again
            pass
    assert calls == [kernel_choice.PASS_ROWS]
    assert "cpu_linear=auto, passes (256 rows): oneDNN for [" in caplog.text
    assert routed_shapes(model) == set()  # every forward is back after the block
    with engine.sampling(model, rows=16):  # another phase, another decision
        assert routed_shapes(model) == expected
    assert calls == [kernel_choice.PASS_ROWS, 16]


def test_a_model_without_float32_linears_is_not_timed(monkeypatch):
    monkeypatch.setattr(kernel_choice, "time_linears", lambda *a, **k: pytest.fail("timed"))
    chooser = kernel_choice.LinearChooser()
    assert chooser.onednn_shapes(three_by_four().to(torch.bfloat16), "passes", 256) == set()


def test_sharded_weights_are_not_timed(monkeypatch):
    """Under FSDP a process holds a flat 1-D shard of each weight: nothing there to time or
    route (onednn_linears stays off for sharded weights)."""
    monkeypatch.setattr(kernel_choice, "time_linears", lambda *a, **k: pytest.fail("timed"))
    model = three_by_four()
    model[0].weight = nn.Parameter(model[0].weight.detach().flatten()[:8])  # a shard
    weights = kernel_choice.float32_linear_weights(model)
    assert {shape: count for shape, (_, count) in weights.items()} == {(4, 4): 2, (8, 4): 1}
    monkeypatch.setattr(kernel_choice, "weights_sharded", lambda m: True)
    assert kernel_choice.LinearChooser().onednn_shapes(three_by_four(), "passes", 256) == set()


def test_a_decision_is_stored_per_machine_kind_and_reused_by_the_next_process(
    monkeypatch, tmp_path, caplog
):
    """A resumed run (a new process) must take the kernels of the run it continues: the second
    chooser reads the first one's decision instead of timing (and perhaps deciding) anew."""
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path))
    timed = []

    def fake_timing(weights, rows, backward, prepack=False):
        timed.append(rows)
        return tuple(
            kernel_choice.ShapeTiming(shape, count, 2.0, 1.0 if shape == (8, 4) else 3.0)
            for shape, (_, count) in weights.items()
        )

    monkeypatch.setattr(kernel_choice, "time_linears", fake_timing)
    model = three_by_four()
    first = kernel_choice.LinearChooser(persist=True)
    assert first.onednn_shapes(model, "sampling", 16) == {(8, 4)}
    assert timed == [16] and list((tmp_path / "kernel_choices").glob("*.json"))
    later = kernel_choice.LinearChooser(persist=True)  # as in another process
    assert later.onednn_shapes(model, "sampling", 16) == {(8, 4)}
    assert timed == [16], "timed again instead of reading the stored decision"
    (decision,) = later.decisions.values()
    assert decision.stored and decision.describe().endswith("on this CPU kind]")
    assert decision.shapes == next(iter(first.decisions.values())).shapes
    assert later.onednn_shapes(model, "passes", 256) == {(8, 4)}  # another key: timed
    assert timed == [16, 256]


def test_an_unreadable_store_means_timing_again(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path))
    chooser = kernel_choice.LinearChooser(persist=True)
    path = default_store_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    timed = []
    monkeypatch.setattr(
        kernel_choice,
        "time_linears",
        lambda w, rows, backward, prepack=False: (
            timed.append(rows)
            or tuple(kernel_choice.ShapeTiming(s, c, 1.0, 2.0) for s, (_, c) in w.items())
        ),
    )
    assert chooser.onednn_shapes(three_by_four(), "sampling", 16) == set()
    assert timed == [16] and "sampling" in path.read_text()  # rewritten with the decision
