"""A run killed with SIGKILL mid-training and resumed ends exactly where an uninterrupted run
ends: same final weights (content hash), same step-n metrics.

Each test trains three times with the smoke config in subprocesses: once straight through,
once killed from outside as soon as its second training-state checkpoint exists, and once
more with resume=auto in the killed run's folder.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from medrl.utils.config import PROJECT_ROOT

CHECKPOINT_EVERY_STEP = ["checkpointing.every_n_steps=1", "checkpointing.keep_last=2"]


# medrl.train with a reward that varies on a random model's output (see the script).
TRAIN = [sys.executable, str(Path(__file__).with_name("varying_reward_train.py"))]
VARYING_REWARD = [
    "~reward.components.correctness",
    "~reward.components.format",
    "~reward.components.explanation_length",
    "+reward.components.distinct.weight=1.0",
]


def train(run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    command = [
        *TRAIN,
        "debug=smoke",
        f"hydra.run.dir={run_dir}",
        *CHECKPOINT_EVERY_STEP,
        *overrides,
    ]
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, run_dir: Path) -> None:
    assert process.wait(timeout=900) == 0, (run_dir.parent / f"{run_dir.name}.log").read_text()


def kill_when_exists(process: subprocess.Popen, path: Path) -> None:
    """SIGKILL `process` as soon as `path` appears (it keeps training until then)."""
    deadline = time.monotonic() + 900
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} was written"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def metric_rows(csv_file: Path) -> dict[int, dict[str, str]]:
    """step -> the merged metric values logged at that step (empty cells dropped)."""
    rows: dict[int, dict[str, str]] = {}
    with csv_file.open() as handle:
        for row in csv.DictReader(handle):
            if row.get("step"):
                values = {k: v for k, v in row.items() if v not in ("", None)}
                rows.setdefault(int(row["step"]), {}).update(values)
    return rows


def weights_hash(run_dir: Path, stage: str) -> str:
    return json.loads((run_dir / "checkpoints" / stage / "manifest.json").read_text())[
        "weights_hash"
    ]


def run_killed_and_resumed(tmp_path: Path, stage: str, overrides: list[str]):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(train(straight, overrides), straight)

    process = train(killed, overrides)
    kill_when_exists(process, killed / "resume" / stage / "step-000002.ckpt")
    assert not (killed / "checkpoints" / stage).exists(), "killed after the stage had finished"

    finish(train(killed, [*overrides, "resume=auto"]), killed)
    return straight, killed


def assert_same_end(straight: Path, killed: Path, stage: str, keys: list[str]) -> None:
    """Same final weights, the same values of `keys` at every step the resumed run logged
    (down to the last one), and the same final metrics apart from wall-clock timings."""
    assert weights_hash(killed, stage) == weights_hash(straight, stage)
    reference = metric_rows(straight / "csv" / stage / "metrics.csv")
    resumed = metric_rows(killed / "csv" / f"{stage}_resumed" / "metrics.csv")
    trained = sorted(step for step, row in resumed.items() if keys[0] in row)
    assert trained[0] >= 2, "the resumed run started over instead of continuing"
    assert trained[-1] == max(step for step, row in reference.items() if keys[0] in row)
    for step in trained:
        for key in keys:
            assert resumed[step].get(key) == reference[step].get(key), f"step {step} {key}"
    finals = [json.loads((d / "results.json").read_text())["metrics"] for d in (straight, killed)]
    untimed = [{k: v for k, v in f.items() if not k.startswith("time/")} for f in finals]
    assert untimed[0] == untimed[1]


def test_grpo_killed_mid_training_resumes_to_the_same_step_n_metrics(tmp_path):
    overrides = ["stages=[grpo]", "grpo.max_steps=4", "grpo.module.lr=1e-2", *VARYING_REWARD]
    straight, killed = run_killed_and_resumed(tmp_path, "grpo", overrides)
    keys = ["loss/loss", "reward/total", "adv/std", "train/grad_norm", "rollout/step"]
    assert_same_end(straight, killed, "grpo", keys)


def test_sft_killed_mid_training_resumes_to_the_same_step_n_metrics(tmp_path):
    # 6 training examples, one per batch, 2 batches per optimizer step: 3 steps per epoch.
    # The kill comes once step 2 is saved, mid-epoch (4 of 6 batches seen), so the resumed
    # run must skip exactly those 4; step 4 then starts the second epoch's own order.
    overrides = ["stages=[sft]", "sft.max_steps=5", "sft.batch_size=1", "sft.grad_accum=2"]
    straight, killed = run_killed_and_resumed(tmp_path, "sft", overrides)
    assert_same_end(straight, killed, "sft", ["train/loss", "train/tokens", "val/loss"])
