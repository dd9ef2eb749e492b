"""The one place where a composed config becomes objects.

Every entry point (train, eval, preflight) calls these builders, so a config key means the same
thing everywhere, and algorithm modules receive objects, never the whole config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from medrl.data import DatasetPools, DatasetSpec, MixtureSpec, load_dataset
from medrl.evaluation.settings import (
    BENCHMARK_GROUP,
    BENCHMARKS_KEY,
    EVALUATION_KEY,
    benchmark_names,
    benchmark_problems,
)
from medrl.models import AdapterSpec, ModelSpec
from medrl.prompts.base import OutputFormat
from medrl.rewards import RewardSet
from medrl.utils.config import CONFIG_DIR
from medrl.utils.settings import raise_errors

OVERRIDES_KEY = f"{EVALUATION_KEY}.benchmark_overrides"


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


def benchmark_configs(cfg: DictConfig) -> dict[str, DictConfig] | None:
    """Benchmark name -> the dataset config its eval pool is built from, in
    evaluation.benchmarks order; None when the key is null (the run's own dataset only).

    A name is composed as `dataset=<name>` composes it (its yaml, with the run's paths and
    environment filling its interpolations), then evaluation.benchmark_overrides.<name> merged
    over it; the run's own dataset (the name its config gives) is the run's dataset block as
    composed, so its numbers are those of an evaluation without benchmarks."""
    block = cfg.get(EVALUATION_KEY)
    values = OmegaConf.to_container(block, resolve=True) if block is not None else {}
    raise_errors(benchmark_problems(values), f"{EVALUATION_KEY}.")
    names = benchmark_names(values)
    if names is None:
        return None
    own = cfg.dataset.get("name") if "dataset" in cfg else None
    overrides = values.get("benchmark_overrides") or {}
    if own in overrides:
        raise ValueError(
            f"{OVERRIDES_KEY}.{own}: {own} is the run's own dataset, used as the run composed "
            f"it; set dataset.* for it instead"
        )
    return {
        name: cfg.dataset if name == own else _benchmark_config(cfg, name, overrides.get(name))
        for name in names
    }


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark of evaluation.benchmarks: the dataset config its eval pool is built from
    (resolvable against the run) and that config instantiated (no data loaded)."""

    config: DictConfig
    dataset: DatasetSpec | MixtureSpec


def build_benchmarks(cfg: DictConfig) -> dict[str, BenchmarkSpec] | None:
    """Every benchmark's spec (`benchmark_configs`), no data loaded; None when
    evaluation.benchmarks is null. A dataset config that does not instantiate is an error
    naming the benchmark."""
    configs = benchmark_configs(cfg)
    if configs is None:
        return None
    specs = {}
    for name, node in configs.items():
        try:
            specs[name] = BenchmarkSpec(node, instantiate(node))
        except InstantiationException as error:  # the spec's own error, wrapped by Hydra
            raise ValueError(f"{BENCHMARKS_KEY}: {name}'s dataset config: {error}") from error
    return specs


def dataset_key(node: DictConfig) -> str:
    """A dataset config as resolved text: configs with equal keys build the same pools."""
    return OmegaConf.to_yaml(node, resolve=True)


def load_benchmarks(
    benchmarks: dict[str, BenchmarkSpec], loaded: dict[str, DatasetPools]
) -> dict[str, DatasetPools]:
    """Each benchmark's pools, in order. `loaded` (dataset_key -> pools: what the run already
    built) is reused where a benchmark's config is one of them, and gains the others, so a
    caller can clear training pools of every eval pool it holds."""
    for benchmark in benchmarks.values():
        key = dataset_key(benchmark.config)
        if key not in loaded:
            loaded[key] = load_dataset(benchmark.dataset)
    return {name: loaded[dataset_key(b.config)] for name, b in benchmarks.items()}


def _benchmark_config(cfg: DictConfig, name: str, overrides: dict | None) -> DictConfig:
    """conf/dataset/<name>.yaml placed where the run's dataset is, in a copy of the run config
    (so `${paths.data_dir}` is the run's), with `overrides` merged over it (a key the dataset
    config lacks is an error naming it)."""
    node = compose_option(BENCHMARK_GROUP, name)
    OmegaConf.set_struct(node, True)
    if overrides:
        try:
            node = OmegaConf.merge(node, overrides)
        except OmegaConfBaseException as error:
            raise ValueError(
                f"{OVERRIDES_KEY}.{name}: {error.msg}; its keys must be keys of "
                f"conf/{BENCHMARK_GROUP}/{name}.yaml"
            ) from error
    staged = copy.deepcopy(cfg)
    with open_dict(staged):
        staged.dataset = node
    return staged.dataset


def compose_option(group: str, option: str) -> DictConfig:
    """The config `group=option` puts at `group`, composed by Hydra (its defaults list too: a
    mixture's sources), interpolations left for the run to fill. Inside a Hydra app its search
    path is used; elsewhere (tests, notebooks) medrl's conf/."""
    override = [f"+{group}={option}"]
    if GlobalHydra.instance().is_initialized():
        return compose(overrides=override)[group]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(overrides=override)[group]
