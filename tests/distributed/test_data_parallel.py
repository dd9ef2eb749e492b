"""Data parallel on 2 CPU processes (gloo), with DDP (trainer=ddp) and with FSDP (trainer=fsdp,
weights, gradients and optimizer states sharded), computes what one process computes on the
same prompts: the same SFT and GRPO losses, metrics and parameter updates, and the same
evaluation predictions, in item order.

Each configuration runs as `python -m medrl.train` would (a subprocess; Lightning starts the
second process): once on one process, then once per strategy with `trainer.devices=2`. LoRA
dropout is off: its masks are random draws that one process and two processes cut differently.
The tests are parametrized by strategy (`-k fsdp` runs one) and share the one-process runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_outputs import adapter, metric_rows
from run_outputs import train as run_smoke  # this folder's runs

STRATEGIES = ["ddp", "fsdp"]
# 6 SFT examples in global batches of 4: the second batch (2 examples) is split 1 / 1.
SFT = ["stages=[sft]", "sft.batch_size=4", "sft.max_steps=2"]
# 4 prompts x G=2 per step: 2 prompts (4 completions, 2 micro-batches) per rank; the batch std
# needs both ranks' rewards. Sampled evaluation with 2 samples per item, 4 batches of 2 items.
GRPO_EVAL = [
    "stages=[grpo,eval]",
    "grpo.max_steps=2",
    "grpo.module.prompts_per_step=4",
    "grpo.module.micro_batch_size=2",
    "grpo.module.advantage.std_scope=batch",
    "grpo.module.lr=1e-2",
    "evaluation.include_base=true",
    "evaluation.batch_size=2",
    "evaluation.sampling.greedy=false",
    "evaluation.num_samples=2",
]
GRPO_KEYS = [
    "reward/total",
    "adv/std",
    "loss/loss",
    "loss/kl",
    "train/grad_norm",
    "train/entropy",
    "rollout/completion_tokens",
]


def train(run_dir: Path, overrides: list[str]) -> Path:
    return run_smoke(run_dir, overrides, timeout_s=900)


def two_processes(strategy: str) -> list[str]:
    return [f"trainer={strategy}", "trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.fixture(scope="module")
def sft_one(tmp_path_factory, shared_dir) -> Path:
    return train(tmp_path_factory.mktemp("sft_one"), SFT)


@pytest.fixture(scope="module")
def grpo_one(tmp_path_factory, shared_dir) -> Path:
    return train(tmp_path_factory.mktemp("grpo_one"), GRPO_EVAL)


@pytest.fixture(scope="module", params=STRATEGIES)
def sft_runs(request, sft_one, tmp_path_factory) -> dict[str, Path]:
    """The same SFT run on one process and on two: {"one": its folder, "two": its folder}."""
    two = tmp_path_factory.mktemp(f"sft_{request.param}")
    return {"one": sft_one, "two": train(two, [*SFT, *two_processes(request.param)])}


@pytest.fixture(scope="module", params=STRATEGIES)
def grpo_runs(request, grpo_one, tmp_path_factory) -> dict[str, Path]:
    two = tmp_path_factory.mktemp(f"grpo_{request.param}")
    return {"one": grpo_one, "two": train(two, [*GRPO_EVAL, *two_processes(request.param)])}


def assert_same_update(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor]) -> None:
    """Every adapter tensor equal within 1e-3 of its norm. Element-wise, Adam's first steps
    are about lr * sign(gradient), so a gradient element at rounding level (summed in another
    order over two processes) can move one weight differently; the tensors cannot."""
    assert one.keys() == two.keys()
    for name in one:
        gap = torch.linalg.vector_norm(two[name] - one[name]).item()
        assert gap <= 1e-3 * torch.linalg.vector_norm(one[name]).item() + 1e-7, name
    # LoRA's B starts at 0: a non-zero B shows the steps moved the weights.
    assert max(t.abs().max().item() for n, t in one.items() if "lora_B" in n) > 1e-4


def test_sft_on_two_processes_matches_one(sft_runs):
    one, two = sft_runs["one"], sft_runs["two"]
    for key in ("train/loss", "val/loss"):
        ones, twos = metric_rows(one, "sft", key), metric_rows(two, "sft", key)
        assert len(ones) == len(twos) > 0, key
        assert twos == pytest.approx(ones, rel=1e-5), key
    assert metric_rows(two, "sft", "train/tokens") == metric_rows(one, "sft", "train/tokens")
    assert_same_update(adapter(one, "sft"), adapter(two, "sft"))


def test_grpo_on_two_processes_matches_one(grpo_runs):
    one, two = grpo_runs["one"], grpo_runs["two"]
    for key in GRPO_KEYS:
        ones, twos = metric_rows(one, "grpo", key), metric_rows(two, "grpo", key)
        assert len(ones) == len(twos) == 2, key
        assert twos == pytest.approx(ones, rel=1e-4, abs=1e-7), key
    assert metric_rows(one, "grpo", "adv/std")[0] > 0, "the run must carry a signal"
    assert_same_update(adapter(one, "grpo"), adapter(two, "grpo"))


def test_every_completion_is_sampled_alike_and_written_once(grpo_runs):
    """Each prompt draws from its own random stream: its completions are the same on any
    rank; rank zero writes all ranks' samples, once."""

    def samples(run: Path) -> list[tuple]:
        lines = (run / "samples" / "grpo.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        return sorted((r["rollout_step"], r["id"], r["completion"]) for r in rows)

    one, two = samples(grpo_runs["one"]), samples(grpo_runs["two"])
    assert len(one) == 4 * 2  # the first step's table: 4 prompts x G = 2
    assert two == one


def test_sharded_evaluation_on_two_processes_equals_one(grpo_runs):
    one, two = grpo_runs["one"], grpo_runs["two"]
    base = Path("eval") / "base" / "predictions.jsonl"
    one_lines = (one / base).read_text().splitlines()
    assert len(one_lines) == 8 * 2  # 8 items x 2 samples
    assert (two / base).read_text().splitlines() == one_lines
    one_results = json.loads((one / "results.json").read_text())["metrics"]
    two_results = json.loads((two / "results.json").read_text())["metrics"]
    base_keys = [k for k in one_results if k.startswith("eval/base/")]
    assert base_keys
    assert {k: two_results[k] for k in base_keys} == {k: one_results[k] for k in base_keys}


def test_only_rank_zero_writes(grpo_runs):
    two = grpo_runs["two"]
    # Hydra's folder and logs: rank zero's job log and config, the second process's own log.
    assert (two / "train.log").is_file() and (two / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in (two / "csv").iterdir()) == ["eval", "grpo"]
    assert json.loads((two / "job_status.json").read_text())["status"] == "COMPLETED"
