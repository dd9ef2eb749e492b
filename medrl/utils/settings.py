"""Settings that validate themselves: problems keyed as the config spells them.

A settings block (a frozen dataclass deriving SettingsBlock) lists what is wrong with raw values
(`check`, before anything is built, every problem at once) and raises SettingsError when built
with a bad one. The modules and preflight call the same checks (medrl.algorithms.grpo_settings
for the GRPO block), so a rule is written once and its message names the key to change.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


def show(value: Any) -> str:
    """A value as a Hydra override spells it (null, true, 5e-06, xml)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass(frozen=True)
class Problem:
    """A setting that is wrong (or, with `warning`, legal but worth saying), keyed below the
    block being checked ("clip.eps_low", "group_size"). `requirement` may name other keys of
    the block as `{prefix}key`, so the message spells them in full wherever it is shown."""

    key: str
    value: Any
    requirement: str
    warning: bool = False

    def message(self, prefix: str = "") -> str:
        return f"{prefix}{self.key}={show(self.value)}: {self.requirement.format(prefix=prefix)}"

    def under(self, block: str) -> Problem:
        """The problem as seen from the block above: its key and the keys its requirement
        names both gain `block`."""
        requirement = self.requirement.replace("{prefix}", f"{{prefix}}{block}.")
        return dataclasses.replace(self, key=f"{block}.{self.key}", requirement=requirement)


class SettingsError(ValueError):
    """Settings that cannot run; the message names every problem with its config key."""

    def __init__(self, problems: Sequence[Problem], prefix: str = "") -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message(prefix) for p in self.problems))


def raise_errors(problems: Sequence[Problem], prefix: str) -> None:
    errors = [p for p in problems if not p.warning]
    if errors:
        raise SettingsError(errors, prefix)


def is_number(value: Any) -> bool:
    # bool is an int subclass, but `lr: true` is a yaml slip, not 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


Rule = tuple[str, Callable[[Any], bool], str]  # field, test, requirement in words


def count_rule(minimum: int, what: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: is_count(v, minimum)), f"must be an integer >= {minimum} ({what})"


def choice_rule(valid: Sequence[str]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in valid), f"must be one of {list(valid)}"


def lower_clip(v: Any) -> bool:
    return is_number(v) and 0 < v <= 1


def positive(v: Any) -> bool:
    return is_number(v) and v > 0


def non_negative(v: Any) -> bool:
    return is_number(v) and v >= 0


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def bool_rule() -> tuple[Callable[[Any], bool], str]:
    return is_bool, "must be true or false"


def fraction_rule(what: str) -> tuple[Callable[[Any], bool], str]:
    """A number in [0, 1)."""
    return (lambda v: is_number(v) and 0 <= v < 1), f"must be in [0, 1) ({what})"


def sub_block(values: Mapping[str, Any], name: str) -> tuple[dict[str, Any], list[Problem]]:
    """The block `name` of `values` as raw values ({} when absent: its defaults), and the
    problem of a value that is not a block (`clip: 0.2` where `clip.eps_low` was meant)."""
    value = values.get(name)
    if value is None:
        return {}, []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value), []
    if isinstance(value, Mapping):
        return dict(value), []
    return {}, [Problem(name, value, "must be a block of settings (name: value pairs)")]


def apply_rules(rules: Sequence[Rule], values: Mapping[str, Any]) -> list[Problem]:
    return [
        Problem(name, values.get(name), requirement)
        for name, test, requirement in rules
        if not test(values.get(name))
    ]


class SettingsBlock:
    """A frozen dataclass of one block: `RULES` test each field alone, `check` adds the rules
    between fields; building one with a bad value raises SettingsError naming its key."""

    BLOCK: ClassVar[str]  # the block's key below its parent, e.g. "clip"
    PARENT: ClassVar[str] = ""  # the parent's config key, e.g. "grpo.module"
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The fields that have a default, with it (what a block left out of a config gets)."""
        return {
            f.name: f.default
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.default is not dataclasses.MISSING
        }

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[Problem]:
        """What is wrong with these raw values (keys relative to the block; a key left out
        takes the field's default, as building the block would)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names - {"_target_"})
        problems = [
            Problem(name, values[name], f"is not a setting of {cls.BLOCK}; valid: {sorted(names)}")
            for name in unknown
        ]
        return problems + apply_rules(cls.RULES, {**cls.defaults(), **values})

    @classmethod
    def from_values(cls, values: Mapping[str, Any]):  # -> an instance of cls
        """Build the block from raw config values, raising on every problem first (an unknown
        key included, which the constructor would only name as a TypeError)."""
        prefix = f"{cls.PARENT}.{cls.BLOCK}." if cls.PARENT else f"{cls.BLOCK}."
        raise_errors(cls.check(values), prefix)
        return cls(**{k: v for k, v in values.items() if k != "_target_"})

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        prefix = f"{self.PARENT}." if self.PARENT else ""
        raise_errors([p.under(self.BLOCK) for p in self.check(values)], prefix)
