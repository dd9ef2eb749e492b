"""The multi-process tests' runs: `python -m medrl.train` on the smoke config with a reward
that varies on a random model's output (so GRPO's updates are not 0), and what they read back
from a run folder."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from medrl.utils.config import PROJECT_ROOT

TRAIN = [sys.executable, str(PROJECT_ROOT / "tests" / "reliability" / "varying_reward_train.py")]
SMOKE_RUN = [
    "debug=smoke",
    "~reward.components.correctness",
    "~reward.components.format",
    "~reward.components.explanation_length",
    "+reward.components.distinct.weight=1.0",
    "adapter.dropout=0",
]


def train(run_dir: Path, overrides: list[str], timeout_s: int = 900) -> Path:
    """`python -m medrl.train` (the varying-reward entry) on SMOKE_RUN + `overrides`, writing
    into `run_dir`; fails the test with the end of its output if the run fails."""
    command = [*TRAIN, *SMOKE_RUN, f"hydra.run.dir={run_dir}", *overrides]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir


def metric_rows(run: Path, stage: str, key: str) -> list[float]:
    """Every logged value of `key` in the stage's CSV metrics, in order."""
    with (run / "csv" / stage / "metrics.csv").open() as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


def adapter(run: Path, stage: str) -> dict[str, torch.Tensor]:
    """The stage checkpoint's trained LoRA tensors."""
    return load_file(run / "checkpoints" / stage / "adapter" / "adapter_model.safetensors")
