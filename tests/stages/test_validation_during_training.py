"""Validation during training picks the checkpoint: select=best keeps the weights of the best
validation (the manifest and the eval report say which step), patience stops a stage early.

The val metric is forced to peak where the test wants by wrapping medrl.stages.validation's
`validation_metrics`: the real metrics are computed, then accuracy is replaced by the test's
sequence (one value per validation, in order). The weights are checked against the
training-state checkpoints of the same steps, which the checkpointing block keeps.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import medrl.stages.validation as validation_module
from medrl.checkpoints import Manifest
from medrl.train import run


def force_accuracy(monkeypatch, values: list[float]) -> list[int]:
    """Make the i-th validation report accuracy values[i]; returns the list of calls made."""
    real = validation_module.validation_metrics
    calls: list[int] = []

    def forced(predictions, labels, seed):
        metrics = real(predictions, labels, seed)
        metrics["accuracy"] = values[len(calls)]
        calls.append(len(calls))
        return metrics

    monkeypatch.setattr(validation_module, "validation_metrics", forced)
    return calls


def smoke_config(compose, tmp_path_factory, overrides: list[str]):
    cfg = compose("train", ["debug=smoke", *overrides])
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    return cfg, Path(cfg.paths.output_dir)


def lora_weights_at(out: Path, step: int) -> dict[str, torch.Tensor]:
    """The LoRA weights of the SFT training-state checkpoint of `step`, named as peft saves
    them in a stage checkpoint's adapter/ folder."""
    state = torch.load(out / "resume" / "sft" / f"step-{step:06d}.ckpt", weights_only=False)
    return {
        name.removeprefix("model.").replace(".default", ""): tensor
        for name, tensor in state["state_dict"].items()
    }


def test_select_best_keeps_the_weights_of_the_peak_validation_and_the_report_names_it(
    compose, shared_dir, tmp_path_factory, monkeypatch
):
    calls = force_accuracy(monkeypatch, [0.1, 0.9, 0.2])  # steps 0, 1, 2: the peak is step 1
    cfg, out = smoke_config(
        compose,
        tmp_path_factory,
        [
            "algorithm=sft",
            "validation.every=1",
            "validation.select=best",
            "checkpointing.every_n_steps=1",
            "checkpointing.keep_last=5",
            "checkpointing.keep_after_stage=true",
        ],
    )

    run(cfg)

    assert len(calls) == 3, "steps 0, 1 and 2"
    checkpoint = out / "checkpoints" / "sft"
    selection = Manifest.read(checkpoint).selection
    assert (selection["select"], selection["step"], selection["last_step"]) == ("best", 1, 2)
    assert selection["metric"] == "val/accuracy" and selection["best_value"] == 0.9
    assert "highest val/accuracy" in selection["reason"]
    kept = load_file(checkpoint / "adapter" / "adapter_model.safetensors")
    at_1, at_2 = lora_weights_at(out, 1), lora_weights_at(out, 2)
    assert set(kept) == set(at_1)
    for name, tensor in kept.items():
        torch.testing.assert_close(tensor, at_1[name], rtol=0, atol=0)
    assert any(not torch.equal(kept[n], at_2[n]) for n in kept), "not the last step's weights"
    history = (checkpoint / "validation.jsonl").read_text().splitlines()
    assert len(history) == 3, "the stage checkpoint carries its validation history"
    report = (out / "eval" / "report.md").read_text()
    assert "## Checkpoints" in report
    assert "- sft: step 1 of 2 (select=best: the highest val/accuracy (0.9000)" in report


def test_select_last_keeps_the_last_step_and_logs_every_validation_to_csv(
    compose, shared_dir, tmp_path_factory
):
    cfg, out = smoke_config(compose, tmp_path_factory, ["stages=[sft]", "validation.every=1"])

    run(cfg)

    selection = Manifest.read(out / "checkpoints" / "sft").selection
    assert (selection["select"], selection["step"], selection["validations"]) == ("last", 2, 3)
    with (out / "csv" / "sft" / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/accuracy")]
    assert [int(row["step"]) for row in rows] == [0, 1, 2]
    for row in rows:
        assert float(row["val/accuracy_ci_low"]) <= float(row["val/accuracy"])
        assert float(row["val/accuracy"]) <= float(row["val/accuracy_ci_high"])
        assert float(row["val/n"]) == 4.0, "the smoke val pool's 4 items"
        letters = sum(float(row[f"val/answer_{k}"]) for k in ("A", "B", "C", "D", "none"))
        assert letters == 4.0, "the histogram counts every item once"
        assert row["val/format_rate"] and row["val/mean_tokens"]
    curve = out / "validation" / "sft.png"
    assert curve.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), "the stage's val curve"


def test_patience_stops_the_stage_and_best_then_keeps_the_start_weights(
    compose, shared_dir, tmp_path_factory, monkeypatch
):
    force_accuracy(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1])
    cfg, out = smoke_config(
        compose,
        tmp_path_factory,
        [
            "stages=[sft]",
            "sft.max_steps=4",
            "validation.every=1",
            "validation.select=best",
            "validation.patience=1",
        ],
    )

    run(cfg)

    manifest = Manifest.read(out / "checkpoints" / "sft")
    selection = manifest.selection
    assert selection["stopped_early"] and selection["last_step"] == 1, "stopped after step 1"
    assert selection["step"] == 0 and "stopped early" in selection["reason"]
    # LoRA starts with B = 0: the weights of step 0 merge to exactly the start model's.
    assert manifest.weights_hash == manifest.parent.weights_hash


@pytest.mark.parametrize("pool", ["eval", "missing"])
def test_a_validation_pool_that_is_the_eval_pool_or_absent_is_refused_before_training(
    compose, shared_dir, pool
):
    from medrl.preflight.report import PreflightError

    cfg = compose("train", ["debug=smoke", "stages=[sft]", f"validation.pool={pool}"])
    with pytest.raises(PreflightError, match="validation.pool"):
        run(cfg)
