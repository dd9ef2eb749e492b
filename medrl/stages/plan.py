"""Which stages a run has, and the config each one sees.

A name in `stages` is either a runner (sft, grpo, eval) that reads the run's groups as they
are, or a stage defined under `stage_defs.<name>` that carries its own data (issue: curricula
such as `stages=[sft_open, sft, grpo, eval]`):

    stage_defs:
      sft_open:
        runner: sft          # which runner trains it (default: the name, when it is a runner)
        format: {...}        # whole group configs, replacing the run's: dataset, format, reward
        sft: {max_steps: 6}  # partial blocks, merged over the run's: sft, grpo, evaluation

Group configs are put there by an experiment's defaults list
(`- /format@stage_defs.sft_open.format: free_text`) or on the command line
(`+format@stage_defs.sft_open.format=free_text`). Every piece of medrl that reads a run config
(preflight, the component builders, the stage runners) reads the stage's config unchanged, so
a stage's data, format and reward mean exactly what they mean for a whole run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

RUNNERS: tuple[str, ...] = ("sft", "grpo", "eval")
# Replaced whole: a free_text format and a letter format share no keys worth merging.
STAGE_GROUPS: tuple[str, ...] = ("dataset", "format", "reward")
# Merged over the run's block, key by key (a typo is an error: the run's block is the schema).
STAGE_BLOCKS: tuple[str, ...] = ("sft", "grpo", "evaluation")
STAGE_KEYS: tuple[str, ...] = ("runner", *STAGE_GROUPS, *STAGE_BLOCKS)
STAGE_DEFS_KEY = "stage_defs"


class StageConfigError(ValueError):
    """A stage name or definition that cannot run; the message names the key to fix."""


@dataclass(frozen=True)
class Stage:
    """One entry of `stages`: its name (the checkpoint folder, the logger version), the
    runner that trains or evaluates it, and the run config as that stage sees it."""

    name: str
    runner: str
    cfg: DictConfig

    @property
    def defined(self) -> bool:
        """True when `stage_defs` gives this stage its own settings."""
        return _definition(self.cfg, self.name) is not None


def stage_plan(cfg: DictConfig) -> list[Stage]:
    """Every stage of `cfg.stages`, in order; fails before any work on a bad name or key."""
    names = list(cfg.stages)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise StageConfigError(
            f"stages={names}: {repeated} appear more than once; each stage writes its own "
            f"checkpoint folder: define a second one under {STAGE_DEFS_KEY} with another name"
        )
    undefined = [name for name in (cfg.get(STAGE_DEFS_KEY) or {}) if name not in names]
    if undefined:
        raise StageConfigError(
            f"{STAGE_DEFS_KEY} defines {undefined}, which stages={names} does not run; "
            "add them to stages or remove their definitions"
        )
    return [stage_config(cfg, name) for name in names]


def stage_config(cfg: DictConfig, name: str) -> Stage:
    """The stage `name` of `cfg`: its runner and its config (the run's, with the stage's
    groups replaced and blocks merged; `cfg` itself is left as it is)."""
    definition = _definition(cfg, name)
    if definition is None:
        if name not in RUNNERS:
            raise StageConfigError(
                f"stages: {name!r} is neither a runner ({', '.join(RUNNERS)}) nor defined "
                f"under {STAGE_DEFS_KEY}.{name} (with runner: and its own dataset / format / "
                "reward / sft / grpo / evaluation)"
            )
        return Stage(name, name, cfg)
    unknown = sorted(set(definition) - set(STAGE_KEYS))
    if unknown:
        raise StageConfigError(
            f"{STAGE_DEFS_KEY}.{name}: unknown keys {unknown}; a stage takes "
            f"{', '.join(STAGE_KEYS)}"
        )
    runner = definition.get("runner") or (name if name in RUNNERS else None)
    if runner not in RUNNERS:
        raise StageConfigError(
            f"{STAGE_DEFS_KEY}.{name}.runner={runner!r}; choose one of {', '.join(RUNNERS)}"
        )
    return Stage(name, runner, _stage_cfg(cfg, name, definition))


def _definition(cfg: DictConfig, name: str) -> DictConfig | None:
    definitions = cfg.get(STAGE_DEFS_KEY) or {}
    return definitions.get(name) if name in definitions else None


def _stage_cfg(cfg: DictConfig, name: str, definition: DictConfig) -> DictConfig:
    staged = copy.deepcopy(cfg)
    with open_dict(staged):
        for group in STAGE_GROUPS:
            if definition.get(group) is not None:
                staged[group] = definition[group]
    for block in STAGE_BLOCKS:
        if definition.get(block) is None:
            continue
        try:
            staged[block] = OmegaConf.merge(cfg[block], definition[block])
        except OmegaConfBaseException as error:
            raise StageConfigError(
                f"{STAGE_DEFS_KEY}.{name}.{block}: {error.msg}; its keys must be keys of the "
                f"run's {block} block"
            ) from error
    return staged


def runners_of(stages: Sequence[Stage]) -> list[str]:
    """The runner of each stage, in order (preflight checks a setting by the runners using it)."""
    return [stage.runner for stage in stages]
