"""A setting's default is written once, in the yaml a user reads: the settings classes and the
modules' signatures read it from there (medrl.utils.config.defaults_from_config), so the Python
API and a composed run get the same values. Checked against Hydra's own composition."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medrl.algorithms import grpo_settings
from medrl.algorithms.grpo import GRPOModule
from medrl.algorithms.numeric_faults import NumericFaultSettings
from medrl.algorithms.sft import SFTModule
from medrl.checkpoints.training_state import CheckpointingSettings
from medrl.deepspeed_strategy import PolicyDeepSpeedStrategy
from medrl.evaluation.text_metrics import TextMetricSettings
from medrl.models import LoraAdapter, QLoraAdapter
from medrl.preflight.runner import PreflightSettings
from medrl.prompts import FreeTextFormat, JsonFormat, LetterFormat, TagsFormat, XmlFormat
from medrl.rewards.judge import JudgeSettings, JudgeSetup
from medrl.rollout import STRAIGHTFORWARD, EngineSettings, SamplingSettings
from medrl.sharding import PolicyFSDPStrategy
from medrl.utils.config import config_values, defaults_from_config

# (config key of the block in a default run, the class whose defaults must equal it)
BLOCKS = [
    ("engine", EngineSettings),
    ("grpo.module.sampling", SamplingSettings),
    ("grpo.module.advantage", grpo_settings.AdvantageSettings),
    ("grpo.module.clip", grpo_settings.ClipSettings),
    ("grpo.module.sequence_clip", grpo_settings.SequenceClipSettings),
    ("grpo.module.entropy", grpo_settings.EntropySettings),
    ("grpo.module.kl", grpo_settings.KLSettings),
    ("grpo.module.dynamic_sampling", grpo_settings.DynamicSampling),
    ("checkpointing", CheckpointingSettings),
    ("numeric_faults", NumericFaultSettings),
    ("preflight", PreflightSettings),
]


def plain(cfg, key: str) -> dict:
    node = OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
    return {k: v for k, v in node.items() if not k.startswith("_")}


@pytest.mark.parametrize(("key", "cls"), BLOCKS, ids=[key for key, _ in BLOCKS])
def test_a_settings_class_defaults_to_what_a_default_run_composes(compose, key, cls):
    cfg = compose("train", [])
    assert cls(**plain(cfg, key)) == cls()
    assert set(plain(cfg, key)) == {f.name for f in dataclasses.fields(cls)}, (
        "the yaml holds every setting of the block"
    )


def test_the_straightforward_preset_is_what_engine_straightforward_composes(compose):
    cfg = compose("train", ["engine=straightforward"])
    assert instantiate(cfg.engine) == STRAIGHTFORWARD
    assert EngineSettings() != STRAIGHTFORWARD, "it merges its own keys over engine/default"


def test_the_text_metric_defaults_are_the_evaluation_yamls(compose):
    cfg = compose("train", [])
    built = instantiate(cfg.evaluation.text_metrics)
    assert dataclasses.replace(built, bertscore=TextMetricSettings().bertscore) == (
        TextMetricSettings()
    )
    assert dataclasses.replace(built.bertscore, cache_dir="~/.cache/medrl") == (
        TextMetricSettings().bertscore
    ), "only the cache folder comes from the run's paths"


SIGNATURES = [
    (GRPOModule, [], "grpo.module"),
    (SFTModule, [], "sft.module"),
    (PolicyFSDPStrategy, ["trainer=fsdp"], "trainer.strategy"),
    (PolicyDeepSpeedStrategy, ["trainer=deepspeed"], "trainer.strategy"),
]


@pytest.mark.parametrize(
    ("owner", "overrides", "key"), SIGNATURES, ids=[owner.__name__ for owner, *_ in SIGNATURES]
)
def test_a_signatures_defaults_are_its_yamls_values(compose, owner, overrides, key):
    values = plain(compose("train", overrides), key)
    defaults = {
        name: p.default
        for name, p in inspect.signature(owner.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
    assert scalars and all(defaults[k] == v for k, v in scalars.items()), scalars


def test_the_modules_fault_limit_is_the_numeric_faults_block(compose):
    limit = compose("train", []).numeric_faults.max_consecutive
    for module in (GRPOModule, SFTModule):
        parameters = inspect.signature(module.__init__).parameters
        assert parameters["max_consecutive_faults"].default == limit


def test_a_field_the_yaml_does_not_write_is_named():
    with pytest.raises(KeyError, match=r"Probe.no_such_key has no default in conf/engine/default"):

        @dataclasses.dataclass(frozen=True)
        @defaults_from_config("engine/default")
        class Probe:
            sampler: str
            no_such_key: int


def test_interpolations_and_hydra_keys_are_left_to_the_composed_run():
    values = config_values("grpo/standard", "module")
    assert "_target_" not in values and "engine" not in values  # engine: ${engine}
    assert values["sampling"]["max_new_tokens"] == SamplingSettings().max_new_tokens


# (overrides, config key, class, fields the run fills from elsewhere: interpolations)
OPTIONS = [
    (["adapter=lora"], "adapter", LoraAdapter, ()),
    (["adapter=qlora"], "adapter", QLoraAdapter, ()),
    (["format=xml"], "format", XmlFormat, ()),
    (["format=json"], "format", JsonFormat, ()),
    (["format=tags"], "format", TagsFormat, ()),
    (["format=letter"], "format", LetterFormat, ()),
    (["format=free_text"], "format", FreeTextFormat, ()),
    (["judge=local"], "judge.settings", JudgeSettings, ("base_url",)),
    (["judge=local"], "judge", JudgeSetup, ("settings", "cache_file")),
]


@pytest.mark.parametrize(
    ("overrides", "key", "cls", "filled"),
    OPTIONS,
    ids=[f"{cls.__name__}-{overrides[0]}" for overrides, _, cls, _ in OPTIONS],
)
def test_a_groups_option_and_its_class_defaults_are_the_same_values(
    compose, overrides, key, cls, filled
):
    composed = plain(compose("train", overrides), key)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    as_list = lambda value: list(value) if isinstance(value, tuple) else value  # noqa: E731
    checked = [name for name in composed if name not in filled]
    assert checked
    for name in checked:
        assert as_list(defaults[name]) == composed[name], name
