"""conf/bench.yaml: the issue's default settings, and shared keys that reach both systems."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from medrl.bench.settings import grpo_kwargs, plan_rounds, schedule, sft_kwargs


def test_the_defaults_are_the_issues_settings(compose):
    cfg = compose("bench")
    OmegaConf.resolve(cfg)
    assert cfg.model.name == "smollm2-135m-instruct" and cfg.dtype == "float32"
    assert (cfg.adapter.r, cfg.adapter.alpha) == (16, 32)
    assert list(cfg.adapter.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (cfg.B, cfg.G, cfg.max_new_tokens, cfg.temperature, cfg.beta) == (4, 4, 64, 1.0, 0.04)
    assert (cfg.threads, cfg.steps, cfg.warmup, cfg.mode) == (2, 6, 1, "grpo")
    assert list(cfg.scaling.G) == [2, 4, 8, 16]
    assert list(cfg.scaling.max_new_tokens) == [32, 64, 128, 256]


def test_shared_keys_set_the_grpo_module_both_systems_read(compose):
    cfg = compose("bench", ["G=8", "max_new_tokens=32", "beta=0.1", "B=2", "lr=1e-4"])
    settings = grpo_kwargs(cfg)
    assert (settings["prompts_per_step"], settings["group_size"]) == (2, 8)
    assert settings["sampling"].max_new_tokens == 32 and settings["sampling"].top_k == 0
    assert settings["kl"].beta == 0.1 and settings["lr"] == 1e-4
    assert settings["seed"] == cfg.seed and settings["sample_table_every"] == 0
    assert sft_kwargs(cfg)["lr"] == cfg.sft.module.lr


def test_runs_alternate_and_split_the_measured_steps():
    assert schedule(("medrl", "trl"), 2) == [(0, "medrl"), (0, "trl"), (1, "medrl"), (1, "trl")]
    assert plan_rounds(6, 2) == (2, 3)
    assert plan_rounds(7, 2) == (2, 4)  # rounded up: at least `steps` measured
    assert plan_rounds(1, 2) == (1, 1)  # never more rounds than steps


def test_without_trl_the_comparison_is_skipped_with_the_install_command(monkeypatch):
    import importlib.util

    from medrl.bench.runner import trl_choice

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    enabled, reason = trl_choice("auto")
    assert not enabled and 'pip install -e ".[bench]"' in reason
    assert trl_choice(False) == (False, "TRL skipped: trl=false")
    with pytest.raises(ModuleNotFoundError, match="trl=true"):
        trl_choice(True)
