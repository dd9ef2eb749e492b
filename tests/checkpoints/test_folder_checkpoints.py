"""Training-state checkpoints that are folders (trainer=deepspeed writes one file per process):
found when every archive in them is intact, skipped otherwise, and pruned whole."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medrl.checkpoints.training_state import (
    TrainingStateCheckpoint,
    latest_readable,
    remove_checkpoint,
    step_checkpoints,
)


def folder_checkpoint(folder: Path, step: int, ranks: int = 2) -> Path:
    """A checkpoint folder laid out as DeepSpeed writes one: per-rank archives under
    checkpoint/, a `latest` tag file beside them."""
    path = folder / f"step-{step:06d}.ckpt"
    (path / "checkpoint").mkdir(parents=True)
    (path / "latest").write_text("checkpoint")
    for rank in range(ranks):
        state = {"w": torch.full((64, 64), float(step))}
        torch.save(state, path / "checkpoint" / f"zero_pp_rank_{rank}_optim_states.pt")
    return path


def test_the_newest_intact_folder_is_the_latest(tmp_path):
    folder_checkpoint(tmp_path, 1)
    newest = folder_checkpoint(tmp_path, 2)
    assert latest_readable(tmp_path) == newest


def test_a_folder_with_a_damaged_archive_is_skipped_for_the_one_before(tmp_path):
    previous = folder_checkpoint(tmp_path, 1)
    damaged = folder_checkpoint(tmp_path, 2) / "checkpoint" / "zero_pp_rank_1_optim_states.pt"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    assert latest_readable(tmp_path) == previous


def test_a_folder_without_any_archive_is_skipped(tmp_path):
    previous = folder_checkpoint(tmp_path, 1)
    (tmp_path / "step-000002.ckpt" / "checkpoint").mkdir(parents=True)
    assert latest_readable(tmp_path) == previous


def test_pruning_removes_old_folders_and_staging_leftovers(tmp_path):
    for step in (1, 2, 3):
        folder_checkpoint(tmp_path, step)
    leftover = tmp_path / ".step-000004.ckpt.0123abcd.tmp"
    (leftover / "checkpoint").mkdir(parents=True)
    saver = TrainingStateCheckpoint(tmp_path, every_n_steps=1, keep_last=2, fingerprint={"a": 1})
    saver._write_settings_and_prune()
    assert [step for step, _ in step_checkpoints(tmp_path)] == [2, 3]
    assert not leftover.exists()
    assert json.loads((tmp_path / "settings.json").read_text()) == {"a": 1}


def test_remove_checkpoint_takes_files_and_folders(tmp_path):
    file = tmp_path / "step-000001.ckpt"
    torch.save({}, file)
    folder = folder_checkpoint(tmp_path, 2)
    remove_checkpoint(file)
    remove_checkpoint(folder)
    remove_checkpoint(tmp_path / "step-000009.ckpt")  # absent: nothing to do
    assert list(tmp_path.iterdir()) == []
