"""Every config composes, resolves, and every `_target_` binds to its signature (no weights)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from medrl.utils.config import CONFIG_DIR

PRIMARY_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
# Groups whose options are swapped on the command line of `python -m medrl.train`.
TRAIN_GROUPS = [
    "model",
    "adapter",
    "dataset",
    "format",
    "reward",
    "algorithm",
    "engine",
    "evaluation",
    "trainer",
    "logger",
    "callbacks",
    "debug",
    "experiment",
    "hparams_search",
]
# Groups whose option instantiates into a cheap spec object (no weights, no data read).
SPEC_GROUPS = ["model", "adapter", "dataset", "format", "reward"]


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def every_train_override() -> list[str]:
    return [f"{group}={option}" for group in TRAIN_GROUPS for option in group_options(group)]


def targets(node: object, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Yield (dotted path, node) for every config node that has a `_target_`."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            yield from targets(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            yield from targets(item, f"{path}[{index}]")


def assert_targets_bind(cfg: DictConfig) -> None:
    for path, node in targets(cfg):
        target = get_object(node._target_)
        kwargs = {k: v for k, v in node.items() if not str(k).startswith("_")}
        args = node.get("_args_", [])
        # A partial target gets its remaining arguments (e.g. the model) from the stage runner.
        bind = "bind_partial" if node.get("_partial_", False) else "bind"
        try:
            getattr(inspect.signature(target), bind)(*args, **kwargs)
        except TypeError as error:
            pytest.fail(f"{path}: {node._target_} does not accept {sorted(kwargs)}: {error}")


def test_the_config_groups_named_by_the_design_exist():
    for group in [
        "model",
        "dataset",
        "reward",
        "algorithm",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "hydra",
        "debug",
        "experiment",
        "adapter",
        "format",
    ]:
        assert (CONFIG_DIR / group).is_dir(), f"conf/{group}/ is missing"
    assert "smoke" in group_options("debug")


@pytest.mark.parametrize("config_name", PRIMARY_CONFIGS)
def test_every_primary_config_composes_resolves_and_binds(compose, config_name):
    cfg = compose(config_name)
    OmegaConf.resolve(cfg)
    assert_targets_bind(cfg)


@pytest.mark.parametrize("override", every_train_override())
def test_every_group_option_composes_resolves_and_binds(compose, override):
    cfg = compose("train", [override])
    OmegaConf.resolve(cfg)
    assert_targets_bind(cfg)


@pytest.mark.parametrize("group", SPEC_GROUPS)
def test_every_spec_option_instantiates_without_loading_anything(compose, group):
    for option in group_options(group):
        # a reward set with judge_* components needs the judge group (nothing is contacted)
        judge = ["judge=local"] if (group, option) == ("reward", "judge") else []
        cfg = compose("train", [f"{group}={option}", *judge])
        assert instantiate(cfg[group]) is not None, f"{group}={option}"


def test_the_default_run_is_the_groups_as_written(compose):
    """No default patches another group: a bare run trains with the values its yaml shows."""
    cfg = compose("train")
    assert list(cfg.stages) == ["sft", "grpo", "eval"]
    assert (cfg.model.name, cfg.dataset.name, cfg.format._target_) == (
        "smollm2-135m-instruct",
        "medmcqa",
        "medrl.prompts.XmlFormat",
    )
    grpo_yaml = OmegaConf.load(CONFIG_DIR / "grpo" / "standard.yaml")
    sft_yaml = OmegaConf.load(CONFIG_DIR / "sft" / "default.yaml")
    assert cfg.grpo.max_steps == grpo_yaml.max_steps == 100
    assert cfg.grpo.module.sampling.max_new_tokens == grpo_yaml.module.sampling.max_new_tokens
    assert cfg.grpo.module.lr == grpo_yaml.module.lr and cfg.sft.module.lr == sft_yaml.module.lr
    assert (cfg.sft.max_steps, cfg.evaluation.limit) == (sft_yaml.max_steps, None)


def test_the_cpu_demo_is_an_explicit_experiment_sized_for_this_cpu(compose):
    cfg = compose("train", ["experiment=cpu_demo"])
    assert (cfg.sft.max_steps, cfg.grpo.max_steps, cfg.evaluation.limit) == (12, 6, 100)
    assert cfg.grpo.module.sampling.max_new_tokens == 64
    assert (cfg.sft.module.lr, cfg.grpo.module.lr) == (3.0e-4, 3.0e-5)
    makefile = (CONFIG_DIR.parent / "Makefile").read_text()
    assert "-m medrl.train experiment=cpu_demo $(ARGS)" in makefile  # what `make train` runs


def test_the_smoke_config_sizes_everything_itself(compose):
    cfg = compose("train", ["debug=smoke"])
    assert cfg.grpo.module.lr == 5.0e-6 and cfg.sft.module.lr == 2.0e-4


def test_experiments_are_override_only():
    """An experiment selects options and overrides keys; it never defines a new _target_."""
    for path in Path(CONFIG_DIR / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), f"{path.name} must be a global package"
        assert "_target_" not in text, f"{path.name} defines a _target_; add a group option"


def test_cfg_job_prints_the_composition_for_a_combination(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medrl.train",
            "--cfg",
            "job",
            "model=tiny_qwen3",
            "adapter=qlora",
            "dataset=pubmedqa",
            "format=json",
            "reward=json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.model.name == "tiny-qwen3"
    assert printed.adapter._target_ == "medrl.models.QLoraAdapter"
    assert printed.format._target_.endswith("JsonFormat")


@pytest.mark.parametrize(
    "overrides",
    [
        ["judge=local"],
        [
            "judge=hosted",
            "judge.settings.base_url=https://judge.example/v1",
            "judge.settings.model=m",
        ],
    ],
    ids=["local", "hosted"],
)
def test_the_judge_group_composes_resolves_binds_and_builds_a_judged_reward_set(compose, overrides):
    cfg = compose("train", ["reward=judge", *overrides])
    OmegaConf.resolve(cfg)
    assert_targets_bind(cfg)
    rewards = instantiate(cfg.reward)
    assert rewards.names == ("judge_correctness", "judge_relevancy", "token_f1")


def test_a_hosted_judge_must_be_given_its_url_and_model(compose):
    cfg = compose("train", ["reward=judge", "judge=hosted"])
    with pytest.raises(Exception, match="base_url"):
        instantiate(cfg.reward)
