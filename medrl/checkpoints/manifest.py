"""The lineage manifest written into every stage checkpoint, and its checks.

Seed 001's GRPO adapter recorded the raw base model as its parent, so its "GRPO model" was the
base model and nobody noticed. A medrl manifest records the parent's content hash, and loading
refuses any checkpoint whose parent, weights, output format or chat settings do not match.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import medrl
from medrl.utils.config import PROJECT_ROOT

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


class LineageError(RuntimeError):
    """A checkpoint does not descend from, or does not match, what the run expects."""


@dataclass(frozen=True)
class ParentRef:
    """What a stage started from.

    kind:          "model" (a ModelSpec: hub id, local folder, GGUF, tiny) or "checkpoint".
    location:      the hub id / folder the weights came from, or the parent checkpoint folder.
    weights_hash:  content hash of the parent's weights as the stage saw them (frozen base).
    model_spec:    for kind "model", the ModelSpec fields needed to load the parent again.
    """

    kind: str
    name: str
    location: str
    weights_hash: str
    model_spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """Everything needed to know where a stage checkpoint came from and how to use it."""

    stage: str
    weights_hash: str
    parent: ParentRef
    adapter: dict[str, Any]
    output_format: dict[str, Any]
    chat_template_kwargs: dict[str, Any]
    data_pools: dict[str, dict[str, Any]]
    dataset: str
    seed: int
    root_model: str
    forms: tuple[str, ...]
    code_version: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    version: int = MANIFEST_VERSION
    # Which training step the weights are and why (validation.select: last | best), e.g.
    # {"select": "best", "metric": "val/accuracy", "step": 8, "last_step": 12, "reason": ...};
    # {} for checkpoints written without validation (and by earlier medrl versions).
    selection: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        payload = asdict(self)
        payload["forms"] = list(self.forms)
        (folder / MANIFEST_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise LineageError(
                f"{folder} is not a medrl stage checkpoint: {MANIFEST_FILE} is missing"
            )
        payload = json.loads(path.read_text())
        if payload.get("version") != MANIFEST_VERSION:
            raise LineageError(
                f"{path}: manifest version {payload.get('version')} is not supported "
                f"(this medrl reads version {MANIFEST_VERSION})"
            )
        payload["parent"] = ParentRef(**payload["parent"])
        payload["forms"] = tuple(payload["forms"])
        return cls(**payload)


def format_record(output_format: Any) -> dict[str, Any]:
    """The output format's name and fields, as recorded in (and compared against) manifests."""
    fields = asdict(output_format) if hasattr(output_format, "__dataclass_fields__") else {}
    return {"name": output_format.name, **fields}


def check_matches_run(
    manifest: Manifest,
    folder: Path,
    output_format: Any | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> None:
    """Refuse a checkpoint whose output format or chat settings differ from the run's."""
    if output_format is not None and manifest.output_format != format_record(output_format):
        raise LineageError(
            f"checkpoint {folder} was trained for output format {manifest.output_format} but "
            f"this run uses {format_record(output_format)}; set format= to the checkpoint's "
            "format or start from another checkpoint"
        )
    if chat_template_kwargs is not None and manifest.chat_template_kwargs != dict(
        chat_template_kwargs
    ):
        raise LineageError(
            f"checkpoint {folder} was trained with chat_template_kwargs "
            f"{manifest.chat_template_kwargs} but this run uses {dict(chat_template_kwargs)}; "
            "set model.chat_template_kwargs to match"
        )


def code_version() -> dict[str, Any]:
    """medrl's version and, in a git checkout, the commit and whether the tree was dirty."""
    version: dict[str, Any] = {"medrl": medrl.__version__}
    if not (PROJECT_ROOT / ".git").exists():
        return version
    git = ["git", "-C", str(PROJECT_ROOT)]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, env=env)
    if commit.returncode == 0:
        status = subprocess.run(
            [*git, "status", "--porcelain"], capture_output=True, text=True, env=env
        )
        version["git_commit"] = commit.stdout.strip()
        version["git_dirty"] = bool(status.stdout.strip())
    return version


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
