"""`make gpu-check`: the CUDA plan is what the GPU machine must run, and its dry run passes on
this CPU (every check's command, config and report, sized down)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medrl.gpu_check import checks, deepspeed_installed, main

CHECKS = [
    "smoke",
    "bench_grpo",
    "fsdp_1_device",
    "qlora_grpo",
    "engine_cuda",
    "deepspeed_zero2",
    "deepspeed_zero3",
    "deepspeed_cpu",
]


def test_the_cuda_plan_runs_every_check_on_the_gpu_in_bf16(tmp_path):
    plan = {check.name: check for check in checks(tmp_path, dry_run=False, model="smollm2_135m")}
    assert list(plan) == CHECKS
    assert "trainer=gpu" in plan["smoke"].command
    bench = plan["bench_grpo"].command
    assert {"device=cuda", "dtype=bfloat16", "precision=bf16-mixed", "trl=true"} <= set(bench)
    assert "model=smollm2_135m" in bench
    assert {"trainer=fsdp", "trainer.devices=1"} <= set(plan["fsdp_1_device"].command)
    assert plan["fsdp_1_device"].refusal == "trainer.devices=1 with trainer=fsdp"
    assert {"adapter=qlora", "grpo.max_steps=2"} <= set(plan["qlora_grpo"].command)
    assert "--cfg" not in plan["qlora_grpo"].command  # it trains on the GPU
    assert plan["engine_cuda"].env == {"MEDRL_TEST_DEVICES": "cpu,cuda"}
    for name, stage in (("deepspeed_zero2", 2), ("deepspeed_zero3", 3)):
        command = set(plan[name].command)
        assert {"trainer=deepspeed", f"trainer.strategy.stage={stage}"} <= command
        assert {"stages=[sft,grpo]", "trainer.devices=1"} <= command
        assert not {"trainer.strategy.allow_cpu=true", "--cfg"} & command  # trains on the GPU
        assert plan[name].results == tmp_path / name
    assert "trainer.precision=bf16-mixed" in plan["deepspeed_zero3"].command
    assert plan["deepspeed_cpu"].refusal == "trainer.accelerator=cpu with trainer=deepspeed"
    # Worst case, every check at its limit; a passing run takes about a third of it.
    assert sum(check.timeout_s for check in plan.values()) <= 35 * 60


def test_without_cuda_the_real_check_refuses_and_names_the_dry_run(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])
    assert "--dry-run" in capsys.readouterr().err


def test_the_dry_run_passes_on_this_cpu_and_reports_every_check(tmp_path):
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "medrl.gpu_check", "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    report = json.loads((out / "report.json").read_text())
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert run.returncode == 0, (statuses, run.stdout[-3000:], run.stderr[-3000:])
    assert list(statuses) == CHECKS and set(statuses.values()) == {"passed"}
    assert report["dry_run"] and report["environment"]["device"].startswith("CPU")
    by_name = {c["name"]: c for c in report["checks"]}
    assert "eval/accuracy" in by_name["smoke"]["figures"]["metrics"]
    assert "| medrl |" in by_name["bench_grpo"]["figures"]["bench_report"]
    assert "passed" in by_name["engine_cuda"]["log_tail"]
    for name in ("deepspeed_zero2", "deepspeed_zero3"):
        if deepspeed_installed():  # trained on one CPU process through the tests' opt-in
            metrics = by_name[name]["figures"]["metrics"]
            assert {"train/loss", "val/loss", "reward/total", "train/grad_norm"} <= set(metrics)
            assert metrics["rollout/step"] == 2.0 and metrics["faults/skipped_updates"] == 0
        else:  # composed only
            log = (out / "logs" / f"{name}.log").read_text()
            assert "_target_: medrl.deepspeed_strategy.PolicyDeepSpeedStrategy" in log
    assert "trainer.accelerator=cpu with trainer=deepspeed" in by_name["deepspeed_cpu"]["log_tail"]


def test_the_cuda_plan_composes_to_gpu_runs(compose, tmp_path):
    """The training checks' overrides compose as meant: debug=smoke's own trainer=cpu gives way
    to the command line's trainer=gpu / fsdp (nothing runs)."""
    plan = {check.name: check for check in checks(tmp_path, dry_run=False, model="smollm2_135m")}

    def overrides(name: str) -> list[str]:
        args = plan[name].command[plan[name].command.index("medrl.train") + 1 :]
        return [a for a in args if not a.startswith("hydra.")]

    smoke = compose("train", overrides("smoke"))
    assert (smoke.trainer.accelerator, smoke.trainer.precision) == ("gpu", "bf16-mixed")
    assert smoke.model.name == "tiny-qwen3"
    fsdp = compose("train", overrides("fsdp_1_device"))
    assert fsdp.trainer.devices == 1 and fsdp.trainer.strategy._target_.endswith(
        "PolicyFSDPStrategy"
    )
    for name, precision in (("deepspeed_zero2", "32-true"), ("deepspeed_zero3", "bf16-mixed")):
        deepspeed = compose("train", overrides(name))
        assert deepspeed.trainer.strategy._target_.endswith("PolicyDeepSpeedStrategy")
        assert (deepspeed.trainer.accelerator, deepspeed.trainer.precision) == ("gpu", precision)
        assert deepspeed.trainer.strategy.allow_cpu is False
        assert list(deepspeed.stages) == ["sft", "grpo"]
        assert deepspeed.sft.max_steps == deepspeed.grpo.max_steps == 2
    qlora = compose("train", overrides("qlora_grpo"))
    assert qlora.adapter._target_.endswith("QLoraAdapter") and list(qlora.stages) == ["grpo"]
    assert qlora.trainer.accelerator == "gpu" and qlora.grpo.max_steps == 2
