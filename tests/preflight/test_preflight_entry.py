"""Preflight in the entry points: it fails before any weights load and leaves preflight.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrl.preflight import PreflightError
from medrl.train import run


class WeightsRequested(Exception):
    """Raised where a stage would load weights: proof that preflight has finished."""


@pytest.fixture
def no_weights(monkeypatch):
    """Every place a stage loads a policy raises WeightsRequested instead."""

    def load_policy(*_args, **_kwargs):
        raise WeightsRequested

    monkeypatch.setattr("medrl.stages.start.load_policy", load_policy)
    monkeypatch.setattr("medrl.stages.evaluate.load_policy", load_policy)
    monkeypatch.setattr("medrl.stages.evaluate.load_checkpoint", load_policy)


def preflight_json(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "preflight.json").read_text())


def test_a_data_dependent_failure_comes_before_any_weights_load(compose, shared_dir, no_weights):
    cfg = compose("train", ["debug=smoke", "grpo.module.sampling.max_new_tokens=100000"])
    with pytest.raises(PreflightError, match=r"grpo\.module\.sampling\.max_new_tokens=100000: "):
        run(cfg)
    written = preflight_json(cfg)
    assert written["ok"] is False and written["counts"]["fail"] == 1


def test_a_config_failure_comes_before_anything_is_built(compose, monkeypatch):
    def must_not_run(*_):
        raise AssertionError("specs were built before the config checks")

    monkeypatch.setattr("medrl.train.build_specs", must_not_run)
    overrides = ["grpo.module.group_size=1", "+reward.components.empathy.weight=1.0"]
    cfg = compose("train", ["debug=smoke", *overrides])
    with pytest.raises(PreflightError) as caught:
        run(cfg)
    assert [f.key for f in caught.value.failures] == [
        "grpo.module.group_size",
        "reward.components.empathy",
    ]


def test_a_passing_preflight_writes_its_checks_and_prompts_then_the_stages_start(
    compose, shared_dir, no_weights
):
    cfg = compose("train", ["debug=smoke"])
    with pytest.raises(WeightsRequested):
        run(cfg)
    written = preflight_json(cfg)
    assert written["ok"] is True and written["counts"]["fail"] == 0
    assert len(written["prompts"]) == 3
    assert all(p["template"] == "chat" and p["tokens"] > 0 for p in written["prompts"])
    checked = {check["key"] for check in written["checks"]}
    assert {"grpo", "dataset.pools.eval", "reward", "sft.max_seq_length"} <= (checked)


def test_disabled_preflight_goes_straight_to_the_stages(compose, shared_dir, no_weights):
    cfg = compose(
        "train",
        ["debug=smoke", "grpo.module.sampling.max_new_tokens=100000", "preflight.enabled=false"],
    )
    with pytest.raises(WeightsRequested):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "preflight.json").exists()


def test_medrl_eval_checks_evaluation_before_loading_a_checkpoint(
    compose, shared_dir, no_weights, tmp_path
):
    from medrl.eval import run as run_eval_entry

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "manifest.json").write_text("{}")  # read only after preflight
    cfg = compose(
        "eval",
        [
            "model=tiny_qwen3",
            "dataset.pools.eval.limit=8",
            "evaluation.sampling.max_new_tokens=100000",
            f"checkpoints=[{checkpoint}]",
        ],
    )
    with pytest.raises(PreflightError) as caught:
        run_eval_entry(cfg)
    assert [f.key for f in caught.value.failures] == ["evaluation.sampling.max_new_tokens"]
    checks = preflight_json(cfg)["checks"]
    assert {c["name"] for c in checks} == {"evaluation", "pools", "context"}
