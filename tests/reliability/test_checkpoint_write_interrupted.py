"""A process killed while writing a training-state checkpoint leaves the previous one intact.

The write is interrupted for real: a child process starts writing and SIGKILLs itself after
part of the archive is on disk (torch.save is wrapped to stop halfway).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from medrl.checkpoints.training_state import AtomicCheckpointIO, latest_readable, step_checkpoints
from medrl.utils.config import PROJECT_ROOT

DIE_WHILE_WRITING = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from medrl.checkpoints import training_state

    real_save = torch.save

    def save_half_then_die(obj, handle, *args, **kwargs):
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    training_state.torch.save = save_half_then_die
    checkpoint = {"state_dict": {"w": torch.full((256, 256), 2.0)}, "global_step": int(sys.argv[2])}
    training_state.AtomicCheckpointIO().save_checkpoint(checkpoint, sys.argv[1])
    """
)


def die_while_writing(path: Path, step: int) -> None:
    child = subprocess.run(
        [sys.executable, "-c", DIE_WHILE_WRITING, str(path), str(step)], cwd=PROJECT_ROOT
    )
    assert child.returncode == -signal.SIGKILL


def good_checkpoint(folder: Path, step: int) -> Path:
    path = folder / f"step-{step:06d}.ckpt"
    checkpoint = {"state_dict": {"w": torch.full((256, 256), 1.0)}, "global_step": step}
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return path


def test_a_killed_write_of_the_next_checkpoint_leaves_the_last_good_one_as_latest(tmp_path):
    previous = good_checkpoint(tmp_path, 1)
    die_while_writing(tmp_path / "step-000002.ckpt", 2)

    assert [step for step, _ in step_checkpoints(tmp_path)] == [1]
    assert latest_readable(tmp_path) == previous
    loaded = AtomicCheckpointIO().load_checkpoint(previous)
    assert loaded["global_step"] == 1
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(256, 256))


def test_a_killed_overwrite_leaves_the_old_file_whole(tmp_path):
    previous = good_checkpoint(tmp_path, 3)
    before = previous.read_bytes()
    die_while_writing(previous, 3)

    assert previous.read_bytes() == before
    assert latest_readable(tmp_path) == previous


def test_a_damaged_newest_file_is_skipped_for_the_previous_intact_one(tmp_path):
    # Not producible by our writer (it renames only complete files), but a disk or a copy can
    # truncate a file: resume falls back to the newest intact checkpoint, with a warning.
    previous = good_checkpoint(tmp_path, 4)
    damaged = good_checkpoint(tmp_path, 5)
    damaged.write_bytes(damaged.read_bytes()[:-4096])

    assert latest_readable(tmp_path) == previous
