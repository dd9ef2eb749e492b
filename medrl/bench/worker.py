"""One benchmark run in a fresh process: `python -m medrl.bench.worker TASK.json RESULT.json`.

A process per run makes peak RSS (VmHWM) a property of one system, and gives every run the same
cold start. The parent (medrl.bench.runner) writes the task, sets the thread variables in the
environment and reads the result; the worker's output goes to a log file beside them.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medrl.bench.environment import peak_rss_bytes, thread_environment
from medrl.bench.settings import BenchTask

# (kind, system) -> module whose RUNNERS[kind] runs it; imported only in the worker that needs it.
SIDES = {
    "medrl": "medrl.bench.medrl_side",
    "trl": "medrl.bench.trl_side",
    "hf": "medrl.bench.hf_side",
}
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}


def run_task(task: BenchTask) -> dict[str, Any]:
    """Run `task` here and return its result (steps, memory, what the runner reports)."""
    import torch
    from omegaconf import OmegaConf
    from transformers import set_seed

    from medrl.bench.instrument import PhaseClock, device_sync

    cfg = OmegaConf.create(task.config)
    torch.set_num_threads(int(cfg.threads))
    set_seed(int(cfg.seed))
    runner = importlib.import_module(SIDES[task.system]).RUNNERS[task.kind]
    clock = PhaseClock(warmup=task.warmup, sync=device_sync(cfg.device))
    started = time.perf_counter()
    info = runner(task, cfg, clock)
    result = {
        "label": task.label,
        "kind": task.kind,
        "system": task.system,
        "round": task.round,
        "warmup": task.warmup,
        "steps": [asdict(step) for step in clock.steps],
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": torch.get_num_threads(),
        **info,
    }
    if cfg.device == "cuda":
        result["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return result


def main(argv: list[str] | None = None) -> None:
    task_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    result = run_task(BenchTask.load(Path(task_path)))
    Path(result_path).write_text(json.dumps(result, indent=1, default=str))


def spawn(task: BenchTask, folder: Path, index: int) -> dict[str, Any]:
    """Run `task` in a subprocess with its thread count pinned; on failure the result says so
    (with the end of the worker's log) instead of raising, so the other runs still report."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{index:02d}_{task.label.replace('/', '_')}"
    task_path, result_path, log_path = (
        folder / f"{stem}.{suffix}" for suffix in ("task.json", "json", "log")
    )
    task.extra.setdefault("scratch_dir", str(folder / f"{stem}.scratch"))
    task.save(task_path)
    env = {**os.environ, **thread_environment(int(task.config["threads"]))}
    for key, value in OFFLINE.items():
        env.setdefault(key, value)
    command = [sys.executable, "-m", "medrl.bench.worker", str(task_path), str(result_path)]
    with log_path.open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code == 0 and result_path.is_file():
        result = json.loads(result_path.read_text())
        result["log"] = str(log_path)
        return result
    tail = log_path.read_text().strip().splitlines()[-25:]
    return {
        "label": task.label,
        "kind": task.kind,
        "system": task.system,
        "round": task.round,
        "failed": True,
        "error": "\n".join(tail),
        "log": str(log_path),
    }


if __name__ == "__main__":
    main()
