"""A tiny random Qwen3 policy (real tokenizer and chat template), loaded once per session."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from medrl.models import FullFinetune, Policy, load_policy
from medrl.utils.config import CONFIG_DIR


@pytest.fixture(scope="session")
def tiny_policy(shared_dir, tmp_path_factory) -> Policy:
    """conf/model/tiny_qwen3 built into a session cache; tests must leave it as they found it.

    Composed here rather than with the function-scoped `compose` fixture so that one model serves
    the whole session; only the model node is resolved, which needs no Hydra runtime.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny_qwen3"])
    GlobalHydra.instance().clear()
    spec = instantiate(cfg.model)
    spec.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    return load_policy(spec, FullFinetune())
