"""An unknown name anywhere in a config stops the run with a message that lists the valid names.

Option names of config groups are Hydra's to check (its error lists the group's options);
names inside a group's values are medrl's (its registries and choice checks list theirs).

Tested elsewhere, not repeated here: an unknown stage (tests/test_train_entry.py), reward
component (tests/preflight/test_preflight_rewards.py), output format in ``get_format``
(tests/prompts/test_output_formats.py), model.source / model.dtype
(tests/models/test_loading.py), dataset.source / dataset.on_bad_row (tests/data/test_spec.py),
and that a bad grpo.module.loss_aggregation names its key
(tests/preflight/test_preflight_values.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
)
from hydra.utils import instantiate

from medrl.algorithms.core import AGGREGATIONS, KL_ESTIMATORS, STD_ESTIMATORS, STD_SCOPES
from medrl.components import build_specs
from medrl.preflight import PreflightError, preflight_config
from medrl.utils.config import CONFIG_DIR, PROJECT_ROOT

# Every config group a run composes (hydra/ is Hydra's own; its launcher group is below).
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def missing_option_message(compose, config_name: str, override: str) -> str:
    with pytest.raises(MissingConfigException) as caught:
        compose(config_name, [override])
    return str(caught.value)


def test_every_group_the_design_names_is_checked_here():
    assert {
        "model",
        "dataset",
        "format",
        "reward",
        "grpo",
        "sft",
        "adapter",
        "algorithm",
        "engine",
        "trainer",
        "logger",
        "evaluation",
    } <= set(GROUPS)


@pytest.mark.parametrize("group", GROUPS)
def test_an_unknown_option_of_a_train_group_lists_every_option_of_that_group(compose, group):
    message = missing_option_message(compose, "train", f"{group}=nope")

    assert f"Could not find '{group}/nope'" in message
    listed = message.split(f"Available options in '{group}':", 1)[1]
    assert all(f"\t{name}\n" in listed for name in options(group)), listed


@pytest.mark.parametrize(
    ("config_name", "group"), [("eval", "model"), ("eval", "format"), ("data", "dataset")]
)
def test_an_unknown_option_in_the_eval_and_data_entry_points_lists_the_options(
    compose, config_name, group
):
    message = missing_option_message(compose, config_name, f"{group}=nope")

    assert f"In '{config_name}': Could not find '{group}/nope'" in message
    assert all(f"\t{name}\n" in message for name in options(group))


def test_an_unknown_launcher_lists_medrls_and_hydras_launchers(compose):
    message = missing_option_message(compose, "train", "hydra/launcher=nope")

    assert "Could not find 'hydra/launcher/nope'" in message
    for name in ["slurm_gpu", "submitit_local", "submitit_slurm", "joblib", "basic"]:
        assert f"\t{name}\n" in message


def test_the_command_line_prints_the_valid_model_names_exits_1_and_writes_nothing(tmp_path):
    python_path = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    result = subprocess.run(
        [sys.executable, "-m", "medrl.train", "model=smolm2_135m"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert "Could not find 'model/smolm2_135m'" in result.stderr
    assert "\tsmollm2_135m\n" in result.stderr and "\ttiny_qwen3\n" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_key_that_is_not_in_the_config_is_refused_naming_it(compose):
    with pytest.raises(ConfigCompositionException) as caught:
        compose("train", ["grpo.module.loss_agregation=token_mean"])

    assert "Could not override 'grpo.module.loss_agregation'" in str(caught.value)


def test_an_appended_key_the_spec_does_not_take_names_the_group_and_the_key(compose):
    cfg = compose("train", ["debug=smoke", "+model.pathh=/models/x"])

    with pytest.raises(InstantiationException, match="unexpected keyword argument 'pathh'") as e:
        build_specs(cfg)
    assert "full_key: model" in str(e.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "dataset.name=medmcq",
            "unknown dataset 'medmcq'; valid names: bioasq, medmcqa, medqa, pubmedqa",
        ),
        (
            "adapter.quant_type=int4",
            "adapter.quant_type='int4' is not valid; choose one of ['nf4', 'fp4']",
        ),
        (
            "adapter.compute_dtype=fp8",
            "adapter.compute_dtype='fp8' is not valid; choose one of "
            "['auto', 'float32', 'bfloat16', 'float16']",
        ),
    ],
    ids=["dataset.name", "adapter.quant_type", "adapter.compute_dtype"],
)
def test_an_unknown_name_inside_a_spec_lists_the_valid_names(compose, override, message):
    cfg = compose("train", ["debug=smoke", "adapter=qlora", override])

    with pytest.raises(InstantiationException) as caught:
        instantiate(cfg[override.split(".", 1)[0]])
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("grpo.module.loss_aggregation", AGGREGATIONS),
        ("grpo.module.advantage.std_scope", STD_SCOPES),
        ("grpo.module.advantage.std_estimator", STD_ESTIMATORS),
        ("grpo.module.kl.estimator", KL_ESTIMATORS),
    ],
    ids=["loss_aggregation", "std_scope", "std_estimator", "kl.estimator"],
)
def test_an_unknown_grpo_convention_lists_the_valid_names(compose, key, valid):
    with pytest.raises(PreflightError) as caught:
        preflight_config(compose("train", ["debug=smoke", f"{key}=nope"]))

    assert f"{key}=nope: must be one of {list(valid)}" in str(caught.value)
