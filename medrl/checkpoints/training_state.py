"""Training-state checkpoints: what a killed SFT or GRPO stage needs to continue exactly.

A stage checkpoint (stage.py) is the durable product of a finished stage. A training-state
checkpoint is Lightning's checkpoint of a stage in progress, taken every N optimizer steps:

- the trainable weights (the modules drop frozen ones; see medrl.algorithms.resume_state),
  optimizer and scheduler state, the loop counters and the train loader's position
  (medrl.data.resumable), the module's own counters (GRPO's prompt position and rollout step);
- the RNG states of torch, numpy and random (sampling in rollouts draws from them);
- a fingerprint of the settings that decide the numbers, so a resume with other settings is
  refused instead of silently mixing two runs.

Files are written atomically under <run>/resume/<stage>/step-000012.ckpt: a crash while
writing leaves the previous file untouched (and at most a hidden temporary file, ignored).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medrl.algorithms.numeric_faults import NumericFaultError
from medrl.utils.config import defaults_from_config
from medrl.utils.io import write_atomic
from medrl.utils.settings import SettingsBlock, bool_rule, count_rule

log = logging.getLogger(__name__)

STEP_FILE = re.compile(r"^step-(\d+)\.ckpt$")
SETTINGS_FILE = "settings.json"


class ResumeError(RuntimeError):
    """A run cannot be resumed as asked (different settings, nothing to resume from...)."""


# --- writing and finding checkpoint files ---------------------------------------------------


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing through a temporary file beside the target.

    The data is streamed to `.step-N.ckpt.<random>.tmp`, fsynced, then renamed over the target
    (os.replace is atomic on one filesystem), so readers see the old file or the whole new one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options=None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; run folders are meant to be shared
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(optimizer step, file) of every finished checkpoint in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.match(p.name))]
    return sorted(found)


def latest_readable(folder: Path) -> Path | None:
    """The newest checkpoint in `folder` whose archive is intact (CRC-checked), or None.

    torch.save writes a zip archive; testzip reads every member and checks its CRC, which
    catches a truncated or damaged file without unpickling it. A checkpoint may also be a
    folder (trainer=deepspeed: one file per process, medrl.deepspeed_strategy, renamed into
    place once complete): then every .pt file in it must be intact, and there must be one.
    """
    for step, path in reversed(step_checkpoints(folder)):
        archives = sorted(path.rglob("*.pt")) if path.is_dir() else [path]
        try:
            if not archives:
                raise OSError("the checkpoint folder holds no .pt file")
            damaged = [(a, member) for a in archives if (member := _damaged_member(a))]
            if not damaged:
                return path
            archive, member = damaged[0]
            log.warning("skipping checkpoint %s: member %s of %s is damaged", path, member, archive)
        except (zipfile.BadZipFile, OSError) as error:
            log.warning("skipping unreadable checkpoint %s (step %s): %s", path, step, error)
    return None


def _damaged_member(archive: Path) -> str | None:
    with zipfile.ZipFile(archive) as opened:
        return opened.testzip()


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint file, or a checkpoint folder (trainer=deepspeed), if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- RNG state ------------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain values (torch.load-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_as_tuples(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate wants tuples; a checkpoint round trip may hand back lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


# --- the settings a resume must share -------------------------------------------------------


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: saved -> current' for every flattened key whose value differs."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{key}: {saved.get(key, '<absent>')!r} -> {current.get(key, '<absent>')!r}"
        for key in keys
        if saved.get(key, "<absent>") != current.get(key, "<absent>")
    ]


# --- the settings and the callback ----------------------------------------------------------


@dataclass(frozen=True)
@defaults_from_config("train", "checkpointing")
class CheckpointingSettings(SettingsBlock):
    """The `checkpointing` block (conf/train.yaml, which holds the defaults), read by the SFT
    and GRPO stages: a
    training-state checkpoint every `every_n_steps` optimizer steps, the newest `keep_last`
    kept, removed once the stage checkpoint is written unless `keep_after_stage`."""

    BLOCK = "checkpointing"
    RULES = (
        ("every_n_steps", *count_rule(1, "optimizer steps")),
        ("keep_last", *count_rule(1, "files kept per stage")),
        ("keep_after_stage", *bool_rule()),
    )

    every_n_steps: int
    keep_last: int
    keep_after_stage: bool


class TrainingStateCheckpoint(pl.Callback):
    """Save a training-state checkpoint every `every_n_steps` optimizer steps (and at the end
    of training), keep the newest `keep_last`, and restore RNG states on resume.

    fingerprint: flattened settings of the run (key -> value) that must be equal on resume.
    A checkpoint is only taken after a batch that completed an optimizer step, so gradient
    accumulation and GRPO's mu passes are never cut in half.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        every_n_steps: int,
        keep_last: int,
        fingerprint: dict[str, Any],
    ) -> None:
        CheckpointingSettings(every_n_steps=every_n_steps, keep_last=keep_last)  # checks them
        self.folder = Path(folder)
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self.fingerprint = dict(fingerprint)
        self._last_saved_step = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        step = trainer.global_step
        stop_reason = getattr(getattr(pl_module, "faults", None), "stop_reason", None)
        if stop_reason:
            # The faulty updates were skipped: the weights here are the last good ones.
            path = self.save(trainer)
            raise NumericFaultError(f"{stop_reason} Last good state saved to {path}.")
        if step - self._last_saved_step >= self.every_n_steps:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step > self._last_saved_step:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> Path:
        path = self.folder / f"step-{trainer.global_step:06d}.ckpt"
        trainer.save_checkpoint(path)  # every rank calls it; the strategy has rank zero write
        self._last_saved_step = trainer.global_step
        if trainer.is_global_zero:
            self._write_settings_and_prune()
        log.info("training state at step %s saved to %s", trainer.global_step, path)
        return path

    def _write_settings_and_prune(self) -> None:
        # The settings, readable without loading a checkpoint: a resume checks them first.
        write_atomic(self.folder / SETTINGS_FILE, json.dumps(self.fingerprint, indent=1))
        for _, old in step_checkpoints(self.folder)[: -self.keep_last]:
            remove_checkpoint(old)
        for leftover in self.folder.glob(".step-*.tmp"):  # from a write that was killed
            remove_checkpoint(leftover)

    # Lightning stores this in checkpoint["callbacks"] and hands it back on resume, before
    # the first training batch.
    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states(), "fingerprint": self.fingerprint}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        differences = fingerprint_differences(state_dict["fingerprint"], self.fingerprint)
        if differences:
            raise ResumeError(
                f"cannot resume from {self.folder}: it was written with other settings:\n  "
                + "\n  ".join(differences[:20])
                + "\nResume with the original settings, or start a fresh run (resume=null)."
            )
        set_rng_states(state_dict["rng"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run counts the next interval from the step it resumed at.
        self._last_saved_step = trainer.global_step
