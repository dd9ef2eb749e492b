"""The one place where a composed config becomes objects.

Every entry point (train, eval, preflight) calls these builders, so a config key means the same
thing everywhere, and algorithm modules receive objects, never the whole config.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra.utils import instantiate
from omegaconf import DictConfig

from medrl.data import DatasetPools, DatasetSpec, MixtureSpec, load_dataset
from medrl.models import AdapterSpec, ModelSpec
from medrl.prompts.base import OutputFormat
from medrl.rewards import RewardSet


@dataclass
class RunSpecs:
    """Everything a run is made of, instantiated but with no weights or data loaded yet."""

    model: ModelSpec
    adapter: AdapterSpec
    dataset: DatasetSpec | MixtureSpec
    output_format: OutputFormat
    rewards: RewardSet


def build_specs(cfg: DictConfig) -> RunSpecs:
    """Instantiate the cheap parts of a run; fails on a bad config before any expensive work."""
    return RunSpecs(
        model=instantiate(cfg.model),
        adapter=instantiate(cfg.adapter),
        dataset=instantiate(cfg.dataset),
        output_format=instantiate(cfg.format),
        rewards=instantiate(cfg.reward),
    )


def build_pools(specs: RunSpecs) -> DatasetPools:
    return load_dataset(specs.dataset)
