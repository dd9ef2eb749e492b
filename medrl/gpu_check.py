"""`make gpu-check`: one prepared script that checks medrl on a CUDA machine, and its dry run.

    python -m medrl.gpu_check [--dry-run] [--out DIR] [--model NAME] [--only CHECK ...]

On a GPU (within about 10 minutes on one H100) it runs, each in its own process:

- smoke:          sft -> grpo -> eval on the tiny Qwen3 with trainer=gpu (bf16-mixed)
- bench_grpo:     `python -m medrl.bench mode=grpo` in bf16 on the CUDA device: medrl's GRPO
                  step against TRL's GRPOTrainer on `--model` (default: the embedded SmolLM2)
- fsdp_1_device:  trainer=fsdp on one device is refused before any weights load, naming
                  trainer.devices (one process shards nothing; torch's NO_SHARD fallback fails
                  on tied weights, medrl/preflight/strategy.py)
- qlora_grpo:     two GRPO steps with adapter=qlora (bitsandbytes' 4-bit base)
- engine_cuda:    tests/rollout/test_engine_devices.py on "cpu,cuda": the engine built for CUDA
                  (transformers' path + device-independent pieces) against the plain path there
- deepspeed_zero2, deepspeed_zero3: 2 SFT steps, then 2 GRPO steps from the SFT checkpoint, with
                  trainer=deepspeed (torch's AdamW, nothing compiled) on one device: ZeRO-2 in
                  32-true, ZeRO-3 (weights partitioned, gathered for the stage checkpoints) in
                  bf16-mixed
- deepspeed_cpu:  trainer=deepspeed with trainer.accelerator=cpu is refused before any weights
                  load, naming trainer.accelerator (medrl/preflight/strategy.py)

and writes report.md and report.json to --out (default outputs/gpu_check/<date>_<time>): the
device, the versions, every check's status, seconds and figures (the bench's table, the smoke
run's metrics) and the end of each check's log. It exits non-zero if any check failed.

--dry-run runs the same checks on a CPU, sized down (the tiny model; one medrl bench step
without TRL, whose CPU side tests/bench runs; QLoRA composed but not run: bitsandbytes' 4-bit
kernels need CUDA; the engine's device tests on "cpu" alone; the DeepSpeed runs in float32 on
one CPU process through the tests' opt-in trainer.strategy.allow_cpu=true where deepspeed is
installed, else composed only), so `make test` proves the script, its commands and their
configs still work. Only torch, transformers, peft and lightning need to be installed on the GPU
machine; `make gpu-wheels` downloads the rest, deepspeed included (README).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from medrl.bench.environment import device_name, versions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "transformers", "peft", "lightning", "trl", "bitsandbytes", "deepspeed")
LOG_TAIL_LINES = 30


@dataclass
class Check:
    """One check: a command run from the project root, its time limit, and where its figures
    are (a run folder with results.json, or a bench folder with report.md)."""

    name: str
    command: list[str]
    timeout_s: int
    what: str
    results: Path | None = None  # a run folder (results.json) or bench folder (report.md)
    env: dict[str, str] = field(default_factory=dict)
    # A check of a refusal: it passes when the command fails and its output says this.
    refusal: str | None = None


@dataclass
class Outcome:
    name: str
    what: str
    command: str
    status: str  # passed | failed | timed out
    seconds: float
    figures: dict[str, Any]
    log_tail: str


def train(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "medrl.train", *overrides]


def checks(out: Path, dry_run: bool, model: str) -> list[Check]:
    """The checks, on CUDA or (dry_run) sized down on a CPU."""
    gpu = "trainer=cpu" if dry_run else "trainer=gpu"
    smoke = ["debug=smoke", "logger=csv", "callbacks=none"]

    def run_dir(name: str) -> str:
        return f"hydra.run.dir={out / name}"

    bench = (
        ["model=tiny_qwen3", "device=cpu", "dtype=float32", "precision=32-true", "trl=false",
         "steps=1", "warmup=0", "rounds=1", "B=2", "G=2", "max_new_tokens=8"]
        if dry_run
        else [f"model={model}", "device=cuda", "dtype=bfloat16", "precision=bf16-mixed",
              "trl=true", "steps=4", "warmup=1", "rounds=2"]
    )  # fmt: skip
    fsdp_device = ["trainer.accelerator=cpu"] if dry_run else []
    deepspeed_runs = [
        deepspeed_check(name, stage, precision, smoke, out, dry_run)
        for name, stage, precision in (
            ("deepspeed_zero2", 2, "32-true"),
            ("deepspeed_zero3", 3, "bf16-mixed"),
        )
    ]
    qlora = [
        *smoke,
        gpu,
        "adapter=qlora",
        "stages=[grpo]",
        "grpo.max_steps=2",
        run_dir("qlora_grpo"),
    ]
    return [
        Check(
            "smoke",
            train(*smoke, gpu, run_dir("smoke")),
            300,
            "sft -> grpo -> eval, tiny Qwen3, " + gpu,
            results=out / "smoke",
        ),
        Check(
            "bench_grpo",
            [
                sys.executable,
                "-m",
                "medrl.bench",
                "mode=grpo",
                *bench,
                f"output_dir={out / 'bench_grpo'}",
            ],
            420,
            (
                "medrl's GRPO step, float32 on the CPU"
                if dry_run
                else f"medrl vs TRL GRPO step, bf16, {model}"
            ),
            results=out / "bench_grpo",
        ),  # fmt: skip
        Check(
            "fsdp_1_device",
            train(*smoke, "trainer=fsdp", "trainer.devices=1", *fsdp_device, run_dir("fsdp")),
            300,
            "trainer=fsdp on one device: refused before loading, naming trainer.devices",
            refusal="trainer.devices=1 with trainer=fsdp",
        ),
        Check(
            "qlora_grpo",
            train(*qlora, "--cfg", "job") if dry_run else train(*qlora),
            300,
            "2 GRPO steps, adapter=qlora" + (" (composed only: needs CUDA)" if dry_run else ""),
            results=None if dry_run else out / "qlora_grpo",
        ),
        Check(
            "engine_cuda",
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/rollout/test_engine_devices.py",
                # the device choice itself; the suite runs it on a CPU already
                *([] if dry_run else ["tests/rollout/test_engine_pieces.py"]),
            ],
            300,
            "the engine's equivalence tests on " + ("cpu" if dry_run else "cpu and cuda"),
            env={"MEDRL_TEST_DEVICES": "cpu" if dry_run else "cpu,cuda"},
        ),  # fmt: skip
        *deepspeed_runs,
        Check(
            "deepspeed_cpu",
            train(
                *smoke,
                "trainer=deepspeed",
                "trainer.accelerator=cpu",
                "trainer.devices=1",
                run_dir("deepspeed_cpu"),
            ),
            120,
            "trainer=deepspeed on a CPU: refused before loading, naming trainer.accelerator",
            refusal="trainer.accelerator=cpu with trainer=deepspeed",
        ),
    ]


def deepspeed_check(
    name: str, stage: int, precision: str, smoke: list[str], out: Path, dry_run: bool
) -> Check:
    """2 SFT then 2 GRPO steps under DeepSpeed ZeRO-`stage` on one device. The dry run trains on
    one CPU process in float32 (as the bench's dry run; bf16 matmuls are slow there: 75 s
    against 35 s) through the tests' opt-in (allow_cpu) where deepspeed is installed, and only
    composes the run where it is not (`make install-deepspeed` installs it)."""
    if dry_run:
        precision = "32-true"
    overrides = [
        *smoke,
        "trainer=deepspeed",
        "trainer.devices=1",
        f"trainer.strategy.stage={stage}",
        f"trainer.precision={precision}",
        "stages=[sft,grpo]",
        f"hydra.run.dir={out / name}",
    ]
    what = f"2 SFT + 2 GRPO steps, trainer=deepspeed ZeRO-{stage}, {precision}, 1 device"
    if not dry_run:
        return Check(name, train(*overrides), 180, what, results=out / name)
    cpu = ["trainer.accelerator=cpu", "trainer.strategy.allow_cpu=true"]
    if deepspeed_installed():
        return Check(name, train(*overrides, *cpu), 240, what + ", CPU opt-in", results=out / name)
    return Check(
        name,
        train(*overrides, *cpu, "--cfg", "job"),
        120,
        what + " (composed only: deepspeed is not installed)",
    )


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def run_check(check: Check, log_dir: Path) -> Outcome:
    """Run one check, its output to <log_dir>/<name>.log; never raises for the check's sake."""
    log_path = log_dir / f"{check.name}.log"
    env = {**os.environ, **check.env, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with log_path.open("w") as log:
        try:
            code = subprocess.run(
                check.command,
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=check.timeout_s,
            ).returncode
            status = "passed" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            code, status = None, f"timed out after {check.timeout_s} s"
    seconds = time.perf_counter() - start
    text = log_path.read_text(errors="replace")
    if check.refusal is not None and code is not None:
        refused = code != 0 and check.refusal in text
        status = "passed" if refused else f"failed (exit {code}, not the refusal expected)"
    tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
    return Outcome(
        check.name,
        check.what,
        " ".join(check.command),
        status,
        round(seconds, 1),
        figures(check.results),
        tail,
    )


def figures(folder: Path | None) -> dict[str, Any]:
    """What a check's folder reports: a run's final metrics, or a bench's report table."""
    if folder is None:
        return {}
    found: dict[str, Any] = {}
    results = folder / "results.json"
    if results.is_file() and "sections" not in (data := json.loads(results.read_text())):
        found["metrics"] = data.get("metrics", {})
    report = folder / "report.md"
    if report.is_file():
        found["bench_report"] = report.read_text()
    return found


def device_description() -> dict[str, Any]:
    """The device the checks ran on and the versions they ran with (the bench's own record)."""
    import torch

    name = device_name("cuda") if torch.cuda.is_available() else f"CPU: {device_name('cpu')}"
    return {"device": name, "versions": versions(PACKAGES), "platform": platform.platform()}


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# medrl GPU check{' (dry run on a CPU)' if report['dry_run'] else ''}",
        "",
        f"- device: {report['environment']['device']}",
        "- versions: "
        + ", ".join(f"{k} {v}" for k, v in report["environment"]["versions"].items()),
        f"- started: {report['started']}, total {report['seconds']:.0f} s",
        "",
        "| check | what | status | seconds |",
        "| --- | --- | --- | ---: |",
    ]
    lines += [
        f"| {o['name']} | {o['what']} | {o['status']} | {o['seconds']:.1f} |"
        for o in report["checks"]
    ]
    for outcome in report["checks"]:
        lines += ["", f"## {outcome['name']}", "", f"`{outcome['command']}`", ""]
        if "metrics" in outcome["figures"]:
            lines += [f"- {k}: {v}" for k, v in sorted(outcome["figures"]["metrics"].items())]
        if "bench_report" in outcome["figures"]:
            lines += [outcome["figures"]["bench_report"]]
        lines += ["", "```text", outcome["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the CPU version (CI)")
    parser.add_argument("--out", type=Path, default=None, help="report folder")
    parser.add_argument("--model", default="smollm2_135m", help="the bench's model group option")
    parser.add_argument("--only", nargs="*", default=None, help="run only these checks")
    args = parser.parse_args(argv)
    out = args.out or PROJECT_ROOT / "outputs" / "gpu_check" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out = out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    plan = checks(out, args.dry_run, args.model)
    unknown = set(args.only or ()) - {c.name for c in plan}
    if unknown:
        parser.error(f"unknown checks {sorted(unknown)}; valid: {[c.name for c in plan]}")
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --dry-run on a CPU")
    started = datetime.now().isoformat(timespec="seconds")
    start = time.perf_counter()
    outcomes = []
    for check in plan:
        if args.only and check.name not in args.only:
            continue
        print(f"[gpu-check] {check.name}: {check.what}", flush=True)
        outcome = run_check(check, logs)
        print(f"[gpu-check] {check.name}: {outcome.status} in {outcome.seconds:.1f} s", flush=True)
        outcomes.append(outcome)
    report = {
        "dry_run": args.dry_run,
        "started": started,
        "seconds": time.perf_counter() - start,
        "environment": device_description(),
        "checks": [asdict(o) for o in outcomes],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render(report))
    print(f"[gpu-check] report: {out / 'report.md'}")
    return 0 if all(o.status == "passed" for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
