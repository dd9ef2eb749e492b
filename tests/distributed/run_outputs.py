"""The multi-process tests' runs: `python -m medrl.train` on the smoke config with a reward
that varies on a random model's output (so GRPO's updates are not 0), and what they read back
from a run folder."""

from __future__ import annotations

import csv
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


def metric_rows(run: Path, stage: str, key: str) -> list[float]:
    """Every logged value of `key` in the stage's CSV metrics, in order."""
    with (run / "csv" / stage / "metrics.csv").open() as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


def adapter(run: Path, stage: str) -> dict[str, torch.Tensor]:
    """The stage checkpoint's trained LoRA tensors."""
    return load_file(run / "checkpoints" / stage / "adapter" / "adapter_model.safetensors")
