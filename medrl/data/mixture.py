"""Several datasets of one answer type drawn as one (e.g. MedMCQA + MedQA for SFT).

``MixtureSpec`` holds the sources' own ``DatasetSpec``s (each cuts its pools by its own rules,
disjoint from its own eval pool) and a ratio per source. ``load_mixture`` then builds each pool
of the mixture from the sources' pools of the same name:

- the eval pool (``eval_pool``) is every source's eval pool, whole: ratios shape what a model
  trains on, never which questions it is scored on;
- every other pool takes ``k_s = floor(w_s * N)`` records from source s (w: the ratios scaled
  to sum to 1), where ``N = min_s floor(n_s / w_s)`` is the largest pool the sources' sizes n
  can fill in these ratios exactly; records keep their source's shuffled order, and the mixed
  pool is shuffled with ``seed``;
- ``finalize_pools`` then drops, from every training pool, questions that another source's
  eval pool (or an earlier pool) holds, so pools stay disjoint across sources too.

Each record keeps ``source`` (its dataset's name); the summary gives every pool's count per
source, and the evaluation reports closed-answer accuracy per source when there are several.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from medrl.data.errors import DataError
from medrl.data.loader import load_pools
from medrl.data.normalize import get_normalizer
from medrl.data.pools import finalize_pools, label_counts, pool_overlaps, record_id, record_text
from medrl.data.records import QARecord
from medrl.data.spec import DatasetSpec, _plain, _set
from medrl.data.summary import DatasetPools, DataSummary, PoolSummary


@dataclass(frozen=True)
class MixtureSpec:
    """A mixture of `sources` (name -> DatasetSpec, one answer type) in `ratios` (name ->
    positive weight, scaled to sum to 1); `seed` shuffles each mixed pool."""

    sources: Mapping[str, DatasetSpec]
    ratios: Mapping[str, float]
    seed: int = 42
    eval_pool: str | None = "eval"

    def __post_init__(self) -> None:
        sources = {name: _dataset_spec(name, value) for name, value in (self.sources or {}).items()}
        ratios = {name: float(value) for name, value in (_plain(self.ratios) or {}).items()}
        _set(self, "sources", sources)
        _set(self, "ratios", ratios)
        if len(sources) < 2:
            raise DataError(
                f"dataset.sources has {len(sources)} dataset(s); a mixture needs two or more"
            )
        if set(ratios) != set(sources):
            raise DataError(
                f"dataset.ratios names {sorted(ratios)} but dataset.sources are "
                f"{sorted(sources)}; give one ratio per source"
            )
        bad = {name: value for name, value in ratios.items() if not value > 0}
        if bad:
            raise DataError(f"dataset.ratios must be positive, got {bad}")
        label_sets = {name: get_normalizer(spec.name).labels for name, spec in sources.items()}
        if len(set(label_sets.values())) > 1:
            raise DataError(
                f"dataset.sources answer with different labels {label_sets}; a mixture takes "
                "datasets of one answer type (e.g. medmcqa + medqa)"
            )
        first = list(sources.values())[0]
        missing = {
            name: sorted(set(first.pools) - set(spec.pools))
            for name, spec in sources.items()
            if set(first.pools) - set(spec.pools)
        }
        if missing:
            raise DataError(
                f"dataset.sources lack pools the others have: {missing}; every source needs "
                f"the pools {list(first.pools)}"
            )

    @property
    def name(self) -> str:
        """``mixture(medmcqa,medqa)``: recorded in checkpoint manifests."""
        return f"mixture({','.join(self.sources)})"

    @property
    def weights(self) -> dict[str, float]:
        total = sum(self.ratios.values())
        return {name: value / total for name, value in self.ratios.items()}

    @property
    def title(self) -> str:
        """``MedMCQA 50% + MedQA 50%``."""
        return " + ".join(
            f"{spec.title} {self.weights[name]:.0%}" for name, spec in self.sources.items()
        )

    @property
    def pools(self) -> list[str]:
        return list(list(self.sources.values())[0].pools)


def _dataset_spec(name: str, value: Any) -> DatasetSpec:
    """A source as a DatasetSpec. Hydra instantiates the sources first and may hand them back
    wrapped as structured configs of DatasetSpec (OmegaConf.to_object unwraps those)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_object(value)
    if isinstance(value, Mapping) and "_target_" in value:
        value = instantiate(value)
    if not isinstance(value, DatasetSpec):
        raise DataError(
            f"dataset.sources.{name} must be a dataset config (conf/dataset/<name>.yaml), "
            f"got {type(value).__name__}"
        )
    return value


def mixture_counts(sizes: Mapping[str, int], weights: Mapping[str, float]) -> dict[str, int]:
    """Records to take from each source: k_s = floor(w_s * N), N = min_s floor(n_s / w_s).

    With sizes {a: 100, b: 30} and weights {a: 0.5, b: 0.5}: N = min(200, 60) = 60, so 30
    of each. A source with no records gives an empty pool (N = 0).
    """
    total = min(math.floor(sizes[name] / weights[name] + 1e-9) for name in weights)
    return {name: min(sizes[name], math.floor(weights[name] * total + 1e-9)) for name in weights}


def mix_pool(
    by_source: Mapping[str, Sequence[QARecord]], counts: Mapping[str, int], seed: int
) -> list[QARecord]:
    """The first counts[s] records of each source's pool, shuffled together with `seed`."""
    mixed = [record for name, records in by_source.items() for record in records[: counts[name]]]
    random.Random(seed).shuffle(mixed)
    return mixed


def load_mixture(spec: MixtureSpec) -> DatasetPools:
    """Every source's pools (``load_pools``), mixed pool by pool as the module docstring says."""
    loaded = {name: load_pools(source) for name, source in spec.sources.items()}
    drawn: dict[str, list[QARecord]] = {}
    for pool in spec.pools:
        by_source = {name: list(pools[pool]) for name, pools in loaded.items()}
        sizes = {name: len(records) for name, records in by_source.items()}
        counts = sizes if pool == spec.eval_pool else mixture_counts(sizes, spec.weights)
        drawn[pool] = mix_pool(by_source, counts, spec.seed)
    final, removed = finalize_pools(drawn, spec.eval_pool, {})
    return DatasetPools(final, _summary(spec, loaded, drawn, final, removed))


def source_counts(records: Sequence[QARecord]) -> dict[str, int]:
    """Records per source dataset, in order of first appearance."""
    return dict(Counter(record.source for record in records))


def _summary(
    spec: MixtureSpec,
    loaded: Mapping[str, DatasetPools],
    drawn: Mapping[str, Sequence[QARecord]],
    final: Mapping[str, Sequence[QARecord]],
    removed: Mapping[str, int],
) -> DataSummary:
    summaries = [pools.summary for pools in loaded.values()]
    labels = summaries[0].labels
    pools = tuple(
        PoolSummary(
            name=pool,
            split="mixture",
            source_split="mixture",
            selection=" + ".join(f"{name} {n}" for name, n in source_counts(drawn[pool]).items()),
            drawn=len(drawn[pool]),
            dedup_removed=removed[pool],
            size=len(final[pool]),
            labels=label_counts(final[pool], labels),
            sources=source_counts(final[pool]),
        )
        for pool in spec.pools
    )
    return DataSummary(
        dataset=spec.name,
        title=spec.title,
        source="+".join(dict.fromkeys(s.source for s in summaries)),
        requested_source="+".join(dict.fromkeys(s.requested_source for s in summaries)),
        location="; ".join(s.location for s in summaries),
        seed=spec.seed,
        eval_pool=spec.eval_pool,
        labels=labels,
        splits=tuple(
            replace(split, split=f"{name}/{split.split}")
            for name, pools in loaded.items()
            for split in pools.summary.splits
        ),
        pools=pools,
        notes=tuple(note for s in summaries for note in s.notes),
        overlap_by_id=pool_overlaps(final, record_id),
        overlap_by_text=pool_overlaps(final, record_text),
    )


def load_dataset(spec: DatasetSpec | MixtureSpec) -> DatasetPools:
    """The pools of a dataset group's spec: one dataset (``load_pools``) or a mixture."""
    return load_mixture(spec) if isinstance(spec, MixtureSpec) else load_pools(spec)


def exclude_eval_questions(datasets: Sequence[DatasetPools]) -> list[DatasetPools]:
    """Each dataset's pools with its training pools cleared of every question (normalized
    text) that any of `datasets`' eval pools holds: a run whose stages read different datasets
    (a curriculum, a mixture for SFT only) trains on none of the questions it is scored on.

    Within one dataset ``load_pools`` already did this; across datasets, the removals are
    counted in the pool summary's dedup_removed and named in its notes.
    """
    held = {
        record_text(record)
        for pools in datasets
        if pools.eval_pool is not None
        for record in pools[pools.eval_pool]
    }
    return [_without(pools, held) for pools in datasets]


def _without(pools: DatasetPools, held: set[str]) -> DatasetPools:
    kept: dict[str, list[QARecord]] = {}
    dropped: dict[str, int] = {}
    for name, records in pools.items():
        keep = name == pools.eval_pool
        kept[name] = [r for r in records if keep or record_text(r) not in held]
        dropped[name] = len(records) - len(kept[name])
    if not any(dropped.values()):
        return pools
    summary = pools.summary
    note = "questions held by another dataset's eval pool, dropped: " + ", ".join(
        f"{name} {n}" for name, n in dropped.items() if n
    )
    counted = tuple(
        replace(
            p,
            dedup_removed=p.dedup_removed + dropped[p.name],
            size=len(kept[p.name]),
            labels=label_counts(kept[p.name], summary.labels),
            sources=source_counts(kept[p.name]) if p.sources else p.sources,
        )
        for p in summary.pools
    )
    return DatasetPools(kept, replace(summary, pools=counted, notes=(*summary.notes, note)))
