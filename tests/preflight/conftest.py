"""The smoke config as preflight sees it: composed, specs built, pools loaded, no weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from omegaconf import DictConfig

from medrl.components import RunSpecs, build_pools, build_specs
from medrl.data import DatasetPools
from medrl.models import ModelSpec, load_tokenizer
from medrl.preflight import PreflightError, PreflightReport, run_preflight


@dataclass
class Smoke:
    """A composed smoke run, ready for run_preflight."""

    cfg: DictConfig
    specs: RunSpecs
    pools: DatasetPools


@pytest.fixture(scope="session")
def qwen_tokenizer(shared_dir) -> Any:
    """The tiny_qwen3 model's tokenizer (the real Qwen3 one), loaded once for the session."""
    spec = ModelSpec(
        name="tiny-qwen3",
        source="tiny_random",
        architecture="qwen3",
        tokenizer_path=str(shared_dir / "tokenizers" / "qwen3"),
        cache_dir="unused",
    )
    return load_tokenizer(spec)


@pytest.fixture
def smoke(compose, shared_dir) -> Callable[..., Smoke]:
    """smoke(*overrides) -> the debug=smoke run with `overrides`, pools loaded."""

    def _smoke(*overrides: str) -> Smoke:
        cfg = compose("train", ["debug=smoke", *overrides])
        specs = build_specs(cfg)
        return Smoke(cfg, specs, build_pools(specs))

    return _smoke


@pytest.fixture
def preflight(smoke, qwen_tokenizer) -> Callable[..., PreflightReport]:
    """preflight(*overrides) -> the report of a passing preflight on the smoke run."""

    def _preflight(*overrides: str) -> PreflightReport:
        run = smoke(*overrides)
        return run_preflight(run.cfg, run.specs, run.pools, tokenizer=qwen_tokenizer)

    return _preflight


@pytest.fixture
def preflight_error(preflight) -> Callable[..., PreflightError]:
    """preflight_error(*overrides) -> the PreflightError a failing smoke run raises."""

    def _error(*overrides: str) -> PreflightError:
        with pytest.raises(PreflightError) as caught:
            preflight(*overrides)
        return caught.value

    return _error
