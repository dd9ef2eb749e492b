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
        "val": 4,
    }
    policy, _ = load_start(base_point(specs.model), specs.adapter, specs.output_format)
    trainable, total = policy.parameter_counts()
    assert 0 < trainable < total
    assert policy.chat_template_kwargs == {"enable_thinking": False}


def test_requesting_a_stage_without_a_runner_fails_before_loading_anything(compose, monkeypatch):
    def must_not_run(*_):
        raise AssertionError("specs were built before the stage check")

    monkeypatch.setattr("medrl.train.build_specs", must_not_run)
    with pytest.raises(ValueError, match=r"'distill' is neither a runner \(sft, grpo, eval\)"):
        run(compose("train", ["stages=[sft,distill,eval]"]))


def test_sampled_evaluation_with_greedy_decoding_fails_before_training(compose, monkeypatch):
    def must_not_run(*_):
        raise AssertionError("specs were built before the evaluation settings were checked")

    monkeypatch.setattr("medrl.train.build_specs", must_not_run)
    with pytest.raises(ValueError, match=r"evaluation.num_samples=4: needs .*greedy=false"):
        run(compose("train", ["evaluation.num_samples=4"]))


def test_a_stage_with_a_mixture_reads_it_and_the_others_read_the_runs_dataset(compose, shared_dir):
    from medrl.data.pools import record_text
    from medrl.stages.plan import stage_plan
    from medrl.train import build_setups

    plan = stage_plan(compose("train", ["+dataset@stage_defs.sft.dataset=medmcqa_medqa"]))
    sft, grpo, evaluation = build_setups(plan, [build_specs(stage.cfg) for stage in plan])

    assert sft.pools.summary.pool("sft").sources == {"medmcqa": 300, "medqa": 300}
    assert grpo.pools is evaluation.pools, "one load for the stages of one dataset config"
    assert grpo.pools.summary.dataset == "medmcqa"
    evaluated = {record_text(r) for r in evaluation.pools["eval"]}
    assert not evaluated & {record_text(r) for r in sft.pools["sft"]}


def test_evaluation_points_must_name_points_of_the_chain(compose, monkeypatch):
    def must_not_run(*_):
        raise AssertionError("specs were built before the evaluation points were checked")

    monkeypatch.setattr("medrl.train.build_specs", must_not_run)
    with pytest.raises(ValueError, match=r"evaluation.points names \['sft_open'\], which the"):
        run(compose("train", ["evaluation.points=[sft_open,grpo]"]))
