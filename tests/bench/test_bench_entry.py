"""`python -m medrl.bench` end to end on the tiny model: both systems' rows in one report."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def test_one_tiny_grpo_step_per_system_prints_both_rows(shared_dir, tmp_path, tmp_path_factory):
    out = tmp_path / "bench"
    command = [
        sys.executable,
        "-m",
        "medrl.bench",
        "model=tiny_qwen3",
        f"model.cache_dir={tmp_path_factory.getbasetemp() / 'model-cache'}",
        "mode=grpo",
        "steps=1",
        "warmup=0",
        "max_new_tokens=4",
        "B=2",
        "G=2",
        "micro_batch_size=2",
        f"hydra.run.dir={out}",
        f"publish_dir={tmp_path / 'performance'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| medrl | 1 |" in result.stdout
    assert "| policy backward |" in result.stdout  # the step's breakdown
    results = json.loads((out / "results.json").read_text())
    medrl = results["sections"]["grpo"]["systems"]["medrl"]
    assert len(medrl["summary"]["step_seconds"]) == 1
    assert medrl["runs"][0]["steps"][0]["counters"]["rows"] == 4  # B x G completions
    # The machine is named, and the result is kept under its kind's folder.
    assert "- cpu: " in result.stdout and "- memory read bandwidth: " in result.stdout
    assert "Decode against the memory floor" in result.stdout
    kind = results["environment"]["cpu"]["slug"]
    kept = tmp_path / "performance" / kind / "grpo_float32_32-true.md"
    assert kept.read_text() == (out / "report.md").read_text()
    if importlib.util.find_spec("trl") is None:
        assert "TRL skipped: trl is not installed" in result.stdout
        pytest.skip('the TRL half needs trl (pip install -e ".[bench]")')
    assert "| TRL | 1 |" in result.stdout and "| TRL / medrl |" in result.stdout
    trl = results["sections"]["grpo"]["systems"]["trl"]["runs"][0]
    assert trl["prompt_ids_match"] and trl["steps"][0]["counters"]["rows"] == 4
