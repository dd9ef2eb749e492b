"""The settings of `python -m medrl.publish` and of its model card, with their one validation.

The defaults are conf/publish.yaml's (read from there), so the yaml a user reads is what runs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medrl.checkpoints.stage import FORMS
from medrl.utils.config import defaults_from_config
from medrl.utils.settings import Problem, Rule, apply_rules, bool_rule, choice_rule, raise_errors

# A hub repo id: <namespace>/<name>, each of letters, digits, '-', '_' and '.'.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def is_repo_id(value: Any) -> bool:
    """True for a hub repo id such as `Qwen/Qwen3-0.6B` (not a local folder such as ./a/b)."""
    return isinstance(value, str) and bool(REPO_ID.match(value)) and ".." not in value


def _texts(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


CARD_RULES: tuple[Rule, ...] = (
    ("license", lambda v: v is None or isinstance(v, str), "must be a license id or null"),
    ("language", _texts, "must be a list of language codes, e.g. [en]"),
    ("tags", _texts, "must be a list of tags"),
    ("base_model", lambda v: v is None or is_repo_id(v), "must be a hub id or null"),
    ("intended_use", lambda v: isinstance(v, str) and bool(v.strip()), "must be a text"),
)
PUBLISH_RULES: tuple[Rule, ...] = (
    ("form", *choice_rule(FORMS)),
    ("dry_run", *bool_rule()),
    ("private", *bool_rule()),
    ("verify", *bool_rule()),
    ("repo_id", lambda v: v is None or is_repo_id(v), "must be <namespace>/<name>"),
    ("eval_dir", lambda v: v is None or isinstance(v, str), "must be a folder or null"),
)


@dataclass(frozen=True)
@defaults_from_config("publish", "card")
class CardSettings:
    """What the model card says that the checkpoint cannot tell (conf/publish.yaml `card`)."""

    license: str | None
    language: tuple[str, ...]
    tags: tuple[str, ...]
    base_model: str | None
    intended_use: str

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> CardSettings:
        """The card block from raw config values; raises SettingsError naming each bad key."""
        merged = {**_defaults(cls), **values}
        raise_errors(apply_rules(CARD_RULES, merged), "card.")
        return cls(
            **{**merged, "language": tuple(merged["language"]), "tags": tuple(merged["tags"])}
        )


@dataclass(frozen=True)
@defaults_from_config("publish", keep=("checkpoint", "card"))
class PublishSettings:
    """One publishing run (conf/publish.yaml): which checkpoint, where to, which form, how."""

    checkpoint: str
    repo_id: str | None
    form: str
    dry_run: bool
    private: bool
    token: str | None
    verify: bool
    eval_dir: str | None
    card: CardSettings = field(default_factory=CardSettings)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> PublishSettings:
        """The settings from a composed config's values (other keys, e.g. task_name, are
        ignored); raises SettingsError naming every bad key, before any file is read."""
        names = {f.name for f in dataclasses.fields(cls)}
        merged = {**_defaults(cls), **{k: v for k, v in values.items() if k in names}}
        problems = apply_rules(PUBLISH_RULES, merged)
        if merged.get("dry_run") is False and merged.get("repo_id") is None:
            need = "an upload needs repo_id=<namespace>/<name> (dry_run=true writes the card only)"
            problems.append(Problem("repo_id", None, need))
        raise_errors(problems, "")
        card = CardSettings.from_values(dict(merged.get("card") or {}))
        return cls(**{**merged, "checkpoint": str(merged["checkpoint"]), "card": card})


def _defaults(cls: type) -> dict[str, Any]:
    """The fields that have a plain default, with it."""
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING
    }
