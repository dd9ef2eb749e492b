"""Continuing a killed run: which folder, which stages are done, where each stage restarts.

`resume` (conf/train.yaml):
  null         a fresh run; refused if the run folder already holds training state (a reused
               hydra.run.dir), so nothing written before is overwritten by accident.
  auto         continue the run in this job's own folder if it holds any state, else start
               fresh. This is what a preemptible job uses: a fixed `hydra.run.dir` (or a SLURM
               requeue of the same sweep job) plus resume=auto.
  <run folder> continue that earlier run, writing into its folder.

Finished stages (their stage checkpoint exists) are not run again: their checkpoint and saved
metrics are reused. A stage in progress continues from its newest intact training-state
checkpoint (medrl.checkpoints.training_state). Either way the settings that decide the numbers
must equal the ones the run was started with.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from medrl.checkpoints.training_state import (
    SETTINGS_FILE,
    ResumeError,
    fingerprint_differences,
    latest_readable,
    step_checkpoints,
)

log = logging.getLogger(__name__)

RESUME_DIR = "resume"
STAGE_METRICS_FILE = "metrics.json"
# The config blocks whose values decide a run's numbers; a resume must match them exactly.
FINGERPRINT_KEYS = (
    "seed",
    "stages",
    "stage_defs",
    "init_from",
    "model",
    "adapter",
    "dataset",
    "format",
    "reward",
    "sft",
    "grpo",
    "trainer",
)
# Within those blocks: where files go, not what is computed.
FINGERPRINT_SKIP = ("trainer.default_root_dir", "model.cache_dir")


def resume_folder(cfg: DictConfig) -> Path | None:
    """The run folder to continue (see the module docstring), or None for a fresh run.

    Fails before any work when the request cannot be met.
    """
    request = cfg.get("resume")
    output_dir = Path(cfg.paths.output_dir)
    if request in (None, "", "null"):
        _refuse_overwrite(output_dir)
        return None
    if request == "auto":
        if _holds_state(output_dir):
            return output_dir
        log.info("resume=auto: nothing to resume in %s; starting a fresh run", output_dir)
        return None
    folder = Path(str(request)).expanduser()
    if not folder.is_dir():
        raise ResumeError(
            f"resume={request}: no such run folder. Give the output folder of the run to "
            "continue (e.g. outputs/train/<date>_<time>), or resume=auto with a fixed "
            "hydra.run.dir."
        )
    if not _holds_state(folder):
        raise ResumeError(
            f"resume={request}: {folder} holds no checkpoints/ or {RESUME_DIR}/ folder, so "
            "there is nothing to continue"
        )
    return folder


def continue_in(cfg: DictConfig, folder: Path) -> None:
    """Check that `folder`'s run can be continued with `cfg`'s settings, then point every
    output of this job (loggers, checkpoints, reports) at it."""
    check_same_settings(cfg, folder)
    if Path(cfg.paths.output_dir).resolve() != folder.resolve():
        log.info("resuming the run in %s (this job's Hydra logs stay in its own folder)", folder)
        with open_dict(cfg):
            cfg.paths.output_dir = str(folder)


def check_same_settings(cfg: DictConfig, folder: Path) -> None:
    """Refuse, before any work, to continue a run whose finished stages or saved training
    state were produced with other settings; the error lists every difference."""
    current = fingerprint(cfg)
    saved = [
        (stage_config, fingerprint(OmegaConf.load(stage_config)))
        for stage_config in sorted(folder.glob("checkpoints/*/config.yaml"))
    ]
    saved += [
        (record, json.loads(record.read_text()))
        for record in sorted(folder.glob(f"{RESUME_DIR}/*/{SETTINGS_FILE}"))
    ]
    for source, settings in saved:
        differences = fingerprint_differences(settings, current)
        if differences:
            raise ResumeError(
                f"cannot resume {folder}: {source.relative_to(folder)} was written with other "
                "settings:\n  "
                + "\n  ".join(differences[:20])
                + "\nResume with the original settings, or start a fresh run (resume=null)."
            )


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The resolved values of FINGERPRINT_KEYS, flattened to dotted keys."""
    flat: dict[str, Any] = {}
    for key in FINGERPRINT_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        _flatten(key, value, flat)
    return {k: v for k, v in flat.items() if k not in FINGERPRINT_SKIP}


def training_checkpoint(output_dir: Path, stage: str) -> Path | None:
    """The newest intact training-state checkpoint of `stage` in the run folder, if any."""
    return latest_readable(training_state_dir(output_dir, stage))


def training_state_dir(output_dir: Path, stage: str) -> Path:
    return output_dir / RESUME_DIR / stage


def discard_training_state(output_dir: Path, stage: str) -> None:
    """Remove a finished stage's training-state files (its stage checkpoint supersedes them)."""
    shutil.rmtree(training_state_dir(output_dir, stage), ignore_errors=True)


def finished_stage_metrics(folder: Path) -> dict[str, float]:
    """The saved metrics of a finished stage's checkpoint (its settings were checked by
    check_same_settings when the run started)."""
    metrics_file = folder / STAGE_METRICS_FILE
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}


def _holds_state(folder: Path) -> bool:
    return (folder / RESUME_DIR).is_dir() or (folder / "checkpoints").is_dir()


def _refuse_overwrite(output_dir: Path) -> None:
    """A fresh run must not overwrite the checkpoints of an earlier run in the same folder."""
    stages = output_dir / RESUME_DIR
    state = stages.is_dir() and any(step_checkpoints(d) for d in stages.iterdir() if d.is_dir())
    finished = sorted(p.parent.name for p in output_dir.glob("checkpoints/*/manifest.json"))
    if state or finished:
        what = f"stage checkpoints {finished}" if finished else "training state"
        raise ResumeError(
            f"{output_dir} already holds the {what} of an earlier run; pass resume=auto to "
            "continue it, or choose another hydra.run.dir"
        )


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    else:
        into[prefix] = value
