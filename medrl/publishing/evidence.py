"""What a model card reports, read from the files a run left (nothing is recomputed).

A stage checkpoint (medrl/checkpoints/stage.py) holds manifest.json (with, when the stage chose
among validations, a `selection` record), config.yaml (the resolved run config) and, when the
stage validated during training, validation.jsonl. The run's eval stage (or medrl.eval) wrote
eval/summary.json, report.md and comparison.png (medrl/stages/evaluate.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medrl.checkpoints.manifest import MANIFEST_FILE
from medrl.stages.plan import RUNNERS, StageConfigError, stage_config

VALIDATION_FILE = "validation.jsonl"
CONFIG_FILE = "config.yaml"
# A record of the resolved GRPO conventions (GRPOModule.conventions()), when a run wrote one.
CONVENTIONS_FILES = ("grpo_conventions.json", "conventions.json")
EVAL_DIR = "eval"


def read_selection(folder: Path) -> dict[str, Any]:
    """The manifest's `selection` record (which validation step the weights are from), or {}
    for checkpoints written before manifests had one."""
    return dict(json.loads((folder / MANIFEST_FILE).read_text()).get("selection") or {})


def read_validation(folder: Path) -> list[dict[str, Any]]:
    """The rows of validation.jsonl (one per validation during training), or [] without one.
    A line that is not a JSON object is an error naming the file and line."""
    path = folder / VALIDATION_FILE
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number} is not a JSON object")
        rows.append(row)
    return rows


def run_folder(checkpoint: Path) -> Path | None:
    """The run a stage checkpoint belongs to (<run>/checkpoints/<stage>), or None."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


def default_eval_dir(checkpoint: Path) -> Path | None:
    """Where the checkpoint's own run wrote its evaluation: <run>/eval."""
    run = run_folder(checkpoint)
    return None if run is None else run / EVAL_DIR


@dataclass(frozen=True)
class Evaluation:
    """An eval folder's results: report.md as written, the rows (points) summary.json holds,
    and comparison.png when present."""

    folder: Path
    report: str
    rows: tuple[str, ...]
    chart: Path | None


def read_evaluation(folder: Path | None) -> Evaluation | None:
    """The evaluation in `folder`, or None when it holds no summary.json and report.md."""
    if folder is None:
        return None
    summary, report = folder / "summary.json", folder / "report.md"
    if not (summary.is_file() and report.is_file()):
        return None
    rows = summary_rows(json.loads(summary.read_text()))
    chart = folder / "comparison.png"
    return Evaluation(folder, report.read_text(), rows, chart if chart.is_file() else None)


def summary_rows(summary: Mapping[str, Any]) -> tuple[str, ...]:
    """The models (points) a summary.json scores: its keys, or with several benchmarks
    (evaluation.benchmarks: {"headline": ..., "benchmarks": {name: {model: ...}}}) the
    headline benchmark's."""
    benchmarks = summary.get("benchmarks")
    if isinstance(benchmarks, Mapping) and "headline" in summary:
        return tuple(benchmarks.get(summary["headline"]) or ())
    return tuple(summary)


@dataclass(frozen=True)
class StageRecord:
    """The stage's runner (sft, grpo) and its config as the stage saw it (the run's groups,
    with a curriculum stage's own blocks merged), or why they are unknown (`problem`)."""

    runner: str | None
    config: dict[str, Any]
    problem: str = ""


def read_stage_config(folder: Path, stage: str) -> StageRecord:
    """The stage's record from the checkpoint's config.yaml (medrl.stages.plan's reading)."""
    path = folder / CONFIG_FILE
    fallback = stage if stage in RUNNERS else None
    if not path.is_file():
        return StageRecord(fallback, {}, f"{path} is missing")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        return StageRecord(fallback, {}, f"{path} is not a mapping")
    try:
        staged = stage_config(cfg, stage)
    except StageConfigError as error:
        return StageRecord(fallback, _plain(cfg), f"{path}: {error}")
    return StageRecord(staged.runner, _plain(staged.cfg))


def grpo_conventions(folder: Path, record: StageRecord) -> tuple[dict[str, Any] | None, str]:
    """(the GRPO conventions, where they came from): a conventions file the run wrote, else
    the stage's `grpo` block from config.yaml (module settings and max_steps); (None, why)
    for a stage that is not GRPO."""
    for name in CONVENTIONS_FILES:
        if (folder / name).is_file():
            return json.loads((folder / name).read_text()), name
    if record.runner != "grpo":
        return None, f"none: the stage ran the {record.runner or 'unknown'} runner, not GRPO"
    block = record.config.get("grpo")
    if not isinstance(block, Mapping):
        return None, f"unknown: {CONFIG_FILE} has no grpo block"
    conventions = _without_hydra_keys(dict(block.get("module") or {}))
    conventions["max_steps"] = block.get("max_steps")
    return conventions, f"the grpo block of {CONFIG_FILE}"


def dataset_ids(config: Mapping[str, Any]) -> list[str]:
    """The hub ids of the stage's dataset (every source of a mixture), in config order."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, Mapping):
            hub = node.get("hub")
            if isinstance(hub, Mapping) and isinstance(hub.get("path"), str):
                found.append(hub["path"])
            for value in node.values():
                visit(value)

    visit(config.get("dataset"))
    return list(dict.fromkeys(found))


def _plain(cfg: DictConfig) -> dict[str, Any]:
    # config.yaml is saved resolved; resolve=False keeps a stray ${...} as text, not an error.
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _without_hydra_keys(node: Any) -> Any:
    """The block without Hydra's _target_ / _partial_ keys: what the settings are."""
    if isinstance(node, Mapping):
        return {k: _without_hydra_keys(v) for k, v in node.items() if not str(k).startswith("_")}
    if isinstance(node, list):
        return [_without_hydra_keys(v) for v in node]
    return node
