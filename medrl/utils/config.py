"""OmegaConf resolvers and small helpers shared by every Hydra entry point."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def group_options(group: str) -> list[str]:
    """The options of a config group, as `group=<option>` accepts them (conf/<group>/*.yaml)."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def register_resolvers() -> None:
    """Register medrl's resolvers once; safe to call from every entry point and test."""
    if not OmegaConf.has_resolver("medrl_root"):
        # `${medrl_root:}` lets conf/paths point at ../shared without relying on the cwd.
        OmegaConf.register_new_resolver("medrl_root", lambda: str(PROJECT_ROOT))


# --- the yaml as the one definition of a setting's default ---------------------------------


@functools.cache  # read once per process; callers only read the result
def _load_option(path: str) -> DictConfig:
    """conf/<path>.yaml merged over the options of its own group that its `defaults` list
    names (e.g. engine/straightforward over engine/default), as Hydra composes them. Entries
    that fill other groups (`- model: smollm2_135m`) are not read: they set other keys."""
    node = OmegaConf.load(CONFIG_DIR / f"{path}.yaml")
    assert isinstance(node, DictConfig), path
    group = path.rpartition("/")[0]
    layers: list[DictConfig] = []
    defaults = node.pop("defaults", None) or ["_self_"]
    for entry in defaults:
        if entry == "_self_":
            layers.append(node)
        elif isinstance(entry, str):  # an option of the same group
            layers.append(_load_option(f"{group}/{entry}" if group else entry))
    if "_self_" not in defaults:
        layers.append(node)
    return OmegaConf.merge(*layers)


def config_values(path: str, key: str | None = None) -> dict[str, Any]:
    """The plain values the yaml conf/<path>.yaml writes (below the dotted `key`): what a run
    that picks that option gets. Interpolations (`${...}`, filled in by a composed run),
    required values (`???`) and Hydra's own keys (`_target_`) are left out."""
    node = _load_option(path)
    if key:
        node = OmegaConf.select(node, key)
        if not isinstance(node, DictConfig):
            raise KeyError(f"conf/{path}.yaml has no block {key}")
    values = {}
    for name in node:
        if str(name).startswith("_") or OmegaConf.is_interpolation(node, name):
            continue
        if OmegaConf.is_missing(node, name):  # `???`: the user must give it, no default
            continue
        values[str(name)] = (
            OmegaConf.to_container(node[name]) if OmegaConf.is_config(node[name]) else node[name]
        )
    return values


def defaults_from_config(path: str, key: str | None = None, keep: tuple[str, ...] = ()):
    """Class decorator (under @dataclass): the fields' defaults are the values conf/<path>.yaml
    writes below `key`, so a setting's default is written once, in the yaml a user reads and
    changes, and the Python API (SettingsClass()) gets the same values as a composed run.

    keep: fields whose default stays in the code because the yaml fills them from elsewhere
    (an interpolation) or builds them (a nested settings block). Every other field must be in
    the yaml (a KeyError names the one that is not); yaml lists become tuples (frozen)."""

    def apply(cls: type) -> type:
        values = config_values(path, key)
        where = f"conf/{path}.yaml" + (f" {key}" if key else "")
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if "ClassVar" in str(annotation) or name in keep:
                continue
            if name not in values:
                raise KeyError(f"{cls.__name__}.{name} has no default in {where}")
            value = values[name]
            setattr(cls, name, tuple(value) if isinstance(value, list) else value)
        return cls

    return apply
