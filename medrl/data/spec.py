"""The dataset spec: every choice the data layer makes, as one frozen value built from config.

Hydra instantiates ``DatasetSpec`` from conf/dataset/<name>.yaml. Nested mappings arrive as
``DictConfig`` (or plain dicts when built in Python); ``__post_init__`` converts them to the
small dataclasses below and validates everything that can be checked without reading data, so
a typo in a config fails at instantiation rather than halfway through a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from medrl.data.errors import DataError
from medrl.data.normalize import get_normalizer

SOURCES: tuple[str, ...] = ("auto", "local", "hub")
BAD_ROW_POLICIES: tuple[str, ...] = ("error", "skip")
SOURCE_ENV_VAR = "MEDRL_DATA_SOURCE"


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig -> plain (resolved) containers; anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _set(obj: object, name: str, value: object) -> None:
    # The spec classes are frozen; __post_init__ normalizes fields once, before anyone reads them.
    object.__setattr__(obj, name, value)


def default_source() -> str:
    """``$MEDRL_DATA_SOURCE`` when set, else ``auto``."""
    return os.environ.get(SOURCE_ENV_VAR) or "auto"


@dataclass(frozen=True)
class HubSpec:
    """Where the dataset lives on the Hugging Face Hub: ``load_dataset(path, name, revision=)``."""

    path: str
    name: str | None = None
    revision: str | None = None

    @property
    def id(self) -> str:
        """Human-readable id, e.g. ``qiaojin/PubMedQA[pqa_labeled]@main``."""
        text = self.path
        if self.name:
            text += f"[{self.name}]"
        if self.revision:
            text += f"@{self.revision}"
        return text


@dataclass(frozen=True)
class LocalSpec:
    """A local copy: ``dir/<file>`` per available split, and aliases for the missing splits.

    split_aliases maps a requested split that has no local file to one that has (the local
    MedMCQA copy has only ``validation``, so ``train: validation`` cuts train pools from it).
    """

    dir: Path
    splits: Mapping[str, str]
    split_aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _set(self, "dir", Path(str(self.dir)))
        _set(self, "splits", dict(_plain(self.splits) or {}))
        _set(self, "split_aliases", dict(_plain(self.split_aliases) or {}))
        for alias, target in self.split_aliases.items():
            if alias in self.splits:
                raise DataError(
                    f"local.split_aliases maps {alias!r}, which has its own local file "
                    f"{self.splits[alias]!r}; remove the alias or the file entry"
                )
            if target not in self.splits:
                raise DataError(
                    f"local.split_aliases maps {alias!r} to {target!r}, which is not one of "
                    f"local.splits {sorted(self.splits)}"
                )

    def resolve_split(self, split: str) -> str | None:
        """The local split that serves ``split`` (itself or its alias); None when neither."""
        if split in self.splits:
            return split
        return self.split_aliases.get(split)

    def path(self, split: str) -> Path:
        """The file of an available local split (after alias resolution)."""
        return self.dir / self.splits[split]


@dataclass(frozen=True)
class PoolSpec:
    """How one pool is cut from a split (after the seeded shuffle).

    At most one selection: ``size`` (the next ``size`` unclaimed rows; ``size: null`` with no
    other selection = all rows still unclaimed), ``range: [start, stop)`` (positions in the
    shuffled split), or ``ids_file`` (a JSON file whose keys, or list items, are record ids).
    ``limit`` then keeps only the pool's first ``limit`` records (after de-duplication), so a
    smoke config can shrink every pool, whatever selects it.
    """

    split: str
    size: int | None = None
    range: tuple[int, int] | None = None
    ids_file: Path | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        rng = _plain(self.range)
        if rng is not None:
            if (
                not isinstance(rng, (list, tuple))
                or len(rng) != 2
                or not all(_is_count_or_none(v) and v is not None for v in rng)
            ):
                raise DataError(f"pool range must be [start, stop] (integers >= 0), got {rng!r}")
            if not 0 <= rng[0] <= rng[1]:
                raise DataError(f"pool range needs 0 <= start <= stop, got {list(rng)}")
            _set(self, "range", (rng[0], rng[1]))
        if self.ids_file is not None:
            _set(self, "ids_file", Path(str(self.ids_file)))
        chosen = [k for k in ("size", "range", "ids_file") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise DataError(f"a pool takes one of size, range, ids_file; got {chosen}")
        for key in ("size", "limit"):
            if not _is_count_or_none(getattr(self, key)):
                raise DataError(
                    f"pool {key} must be a non-negative integer or null, got {getattr(self, key)!r}"
                )

    def describe(self) -> str:
        """Short description for reports: ``size 500``, ``rest``, ``range 0:100``,
        ``ids <file>``, each followed by ``, limit N`` when a limit is set."""
        if self.ids_file is not None:
            text = f"ids {self.ids_file.name}"
        elif self.range is not None:
            text = f"range {self.range[0]}:{self.range[1]}"
        elif self.size is not None:
            text = f"size {self.size}"
        else:
            text = "rest"
        return text if self.limit is None else f"{text}, limit {self.limit}"


def _is_count_or_none(value: object) -> bool:
    # bool is an int subclass; `size: true` in a yaml is a typo, not a size of 1.
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that decides which records end up in which pool.

    name:              medmcqa | medqa | pubmedqa (picks the normalizer).
    pools:             ordered name -> PoolSpec; pools of one underlying split share its
                       shuffle: ids_file pools claim their rows first, then the others are
                       drawn in this order (declare eval first so its rows do not depend on
                       the sizes of the training pools).
    source:            auto | local | hub; None -> $MEDRL_DATA_SOURCE or auto. auto = local when
                       every local file the pools need exists, else hub.
    hub / local:       where to read from; either may be None (then that source is unavailable).
    answer_index_base: 0 or 1, for index-valued answer columns (MedMCQA ``cop``).
    on_bad_row:        error (raise DataError naming the row) | skip (count it in the summary).
    seed:              seed of the per-split shuffle.
    eval_pool:         the pool every other pool is de-duplicated against (by normalized
                       question text, as are later pools against earlier ones); None = none.
    """

    name: str
    pools: Mapping[str, PoolSpec]
    source: str | None = None
    hub: HubSpec | None = None
    local: LocalSpec | None = None
    answer_index_base: int = 0
    on_bad_row: str = "error"
    seed: int = 42
    eval_pool: str | None = "eval"

    def __post_init__(self) -> None:
        get_normalizer(self.name)  # fails early, listing the valid names
        _set(self, "source", self.source or default_source())
        if self.source not in SOURCES:
            raise DataError(f"dataset.source={self.source!r}; valid: {', '.join(SOURCES)}")
        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise DataError(
                f"dataset.on_bad_row={self.on_bad_row!r}; valid: {', '.join(BAD_ROW_POLICIES)}"
            )
        if self.answer_index_base not in (0, 1):
            raise DataError(
                f"dataset.answer_index_base must be 0 or 1, not {self.answer_index_base}"
            )
        _set(self, "hub", _build(HubSpec, self.hub))
        _set(self, "local", _build(LocalSpec, self.local))
        pools = _plain(self.pools) or {}
        if not pools:
            raise DataError("dataset.pools is empty; declare at least one pool")
        _set(self, "pools", {name: _build(PoolSpec, pool) for name, pool in pools.items()})
        if self.eval_pool is not None and self.eval_pool not in self.pools:
            raise DataError(
                f"dataset.eval_pool={self.eval_pool!r} is not one of the pools "
                f"{list(self.pools)}; name an existing pool or set dataset.eval_pool=null"
            )

    @property
    def title(self) -> str:
        """Display name, e.g. ``MedMCQA``."""
        return get_normalizer(self.name).title


def _build(cls: type, value: Any) -> Any:
    """Instance of ``cls`` from a mapping / DictConfig; instances and None pass through."""
    value = _plain(value)
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise DataError(f"{cls.__name__} expects a mapping, got {value!r}")
    return cls(**value)
