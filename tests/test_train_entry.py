"""The training entry point: one place instantiates a run, and bad requests fail before work."""

from __future__ import annotations

import pytest

from medrl.components import build_pools, build_specs
from medrl.data import DatasetSpec
from medrl.models import LoraAdapter, ModelSpec
from medrl.prompts.base import OutputFormat
from medrl.rewards import RewardSet
from medrl.stages.start import base_point, load_start
from medrl.train import run


def test_build_specs_turns_every_group_into_its_object_without_loading(compose):
    specs = build_specs(compose("train"))
    assert isinstance(specs.model, ModelSpec) and specs.model.source == "gguf"
    assert isinstance(specs.adapter, LoraAdapter)
    assert isinstance(specs.dataset, DatasetSpec) and specs.dataset.name == "medmcqa"
    assert isinstance(specs.output_format, OutputFormat) and specs.output_format.name == "xml"
    assert isinstance(specs.rewards, RewardSet)
    assert specs.rewards.names == ("correctness", "format", "explanation_length")


def test_smoke_config_builds_small_pools_and_a_tiny_trainable_policy(compose, shared_dir):
    specs = build_specs(compose("train", ["debug=smoke"]))
    pools = build_pools(specs)
    assert {name: len(records) for name, records in pools.items()} == {
        "sft": 8,
        "grpo": 8,
        "eval": 8,
    }
    policy, _ = load_start(base_point(specs.model), specs.adapter, specs.output_format)
    trainable, total = policy.parameter_counts()
    assert 0 < trainable < total
    assert policy.chat_template_kwargs == {"enable_thinking": False}


def test_requesting_a_stage_without_a_runner_fails_before_loading_anything(compose, monkeypatch):
    def must_not_run(*_):
        raise AssertionError("specs were built before the stage check")

    monkeypatch.setattr("medrl.train.build_specs", must_not_run)
    with pytest.raises(ValueError, match=r"'distill' is neither a runner \(sft, grpo, eval\) nor defined"):
        run(compose("train", ["stages=[sft,distill,eval]"]))


def test_sampled_evaluation_with_greedy_decoding_fails_before_training(compose, monkeypatch):
    def must_not_run(*_):
        raise AssertionError("specs were built before the evaluation settings were checked")

    monkeypatch.setattr("medrl.train.build_specs", must_not_run)
    with pytest.raises(ValueError, match=r"evaluation.num_samples=4 needs .*greedy=false"):
        run(compose("train", ["evaluation.num_samples=4"]))
