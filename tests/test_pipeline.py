"""`python -m medrl.train` end to end on the smoke config: stages chain through checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from medrl.checkpoints import Manifest, weights_hash
from medrl.evaluation import read_predictions
from medrl.models import FullFinetune, load_policy
from medrl.train import run


def test_smoke_sft_then_eval_writes_a_checkpoint_predictions_and_a_report(
    compose, shared_dir, tmp_path_factory
):
    cfg = compose("train", ["debug=smoke", "algorithm=sft", "logger=csv"])
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    out = Path(cfg.paths.output_dir)

    result = run(cfg)

    manifest = Manifest.read(out / "checkpoints" / "sft")
    base = load_policy(instantiate(cfg.model), FullFinetune()).model
    assert manifest.parent.kind == "model"
    assert manifest.parent.weights_hash == weights_hash(base), "parent = the base model"
    assert manifest.weights_hash != manifest.parent.weights_hash, "SFT changed the weights"
    pools = manifest.data_pools
    assert pools["sft_train"]["count"] + pools["sft_val"]["count"] == 8
    for name in ("base", "sft"):
        assert len(read_predictions(out / "eval" / name / "predictions.jsonl")) == 8
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert set(summary) == {"base", "sft"}
    assert result == summary["sft"]["accuracy"]
    report = (out / "eval" / "report.md").read_text()
    assert "| base | 8 |" in report and "| sft | 8 |" in report
    metrics = (out / "csv" / "sft" / "metrics.csv").read_text().splitlines()[0]
    assert {"train/loss", "train/tokens", "val/loss"} <= set(metrics.split(","))


def test_medrl_eval_scores_a_stage_checkpoint_like_the_pipeline_did(
    compose, shared_dir, tmp_path_factory
):
    from medrl.eval import run as run_eval_entry

    cfg = compose("train", ["debug=smoke", "algorithm=sft"])
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    out = Path(cfg.paths.output_dir)
    run(cfg)
    pipeline_sft = read_predictions(out / "eval" / "sft" / "predictions.jsonl")
    checkpoint = out / "checkpoints" / "sft"

    eval_cfg = compose(
        "eval",
        [
            "model=tiny_qwen3",
            "evaluation.sampling.max_new_tokens=8",
            "dataset.pools.eval.limit=8",
            f"checkpoints=[{checkpoint}]",
            "evaluation.include_base=false",
        ],
    )
    eval_cfg.model.cache_dir = cfg.model.cache_dir
    accuracy = run_eval_entry(eval_cfg)

    again = read_predictions(Path(eval_cfg.paths.output_dir) / "eval" / "sft" / "predictions.jsonl")
    assert [p.completion for p in again] == [p.completion for p in pipeline_sft]
    assert accuracy == sum(p.correct for p in again) / len(again)
    results = json.loads((Path(eval_cfg.paths.output_dir) / "results.json").read_text())
    assert results["optimized_metric"]["value"] == accuracy, "a sweep of medrl.eval aggregates"


def test_medrl_eval_refuses_a_folder_that_is_not_a_checkpoint(compose, tmp_path):
    from medrl.eval import run as run_eval_entry

    with pytest.raises(FileNotFoundError, match="not medrl stage checkpoints"):
        run_eval_entry(compose("eval", [f"checkpoints=[{tmp_path}]"]))


def test_sft_grpo_eval_chain_with_sampled_eval_logs_the_report_to_wandb_offline(
    compose, shared_dir, tmp_path_factory, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose(
        "train",
        [
            "debug=smoke",
            "algorithm=sft_grpo",
            "logger=many",
            "evaluation.num_samples=2",
            "evaluation.sampling.greedy=false",
        ],
    )
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    out = Path(cfg.paths.output_dir)

    value = run(cfg)

    results = json.loads((out / "results.json").read_text())
    assert results["chain"] == ["base", "sft", "grpo"]
    assert results["optimized_metric"] == {"name": "eval/accuracy", "value": value}
    assert results["metrics"]["eval/accuracy"] == results["metrics"]["eval/grpo/accuracy"]
    assert results["metrics"]["eval/samples_per_item"] == 2.0
    for point, path in results["predictions"].items():
        predictions = read_predictions(out / path)
        assert [p.sample for p in predictions[:2]] == [0, 1], point
        assert len(predictions) == 16, "8 items x 2 samples"
    report = (out / "eval" / "report.md").read_text()
    assert "## Sampling" in report and "| grpo | 2 |" in report
    assert "| sft -> grpo | 8 |" in report, "paired tests on the 8 voted items"
    [wandb_run] = (out / "wandb").glob("offline-run-*")  # one W&B run for the whole job
    assert list(wandb_run.rglob("media/images/eval/comparison_*.png"))
    [table] = wandb_run.rglob("media/table/eval/report_*.table.json")
    rows = json.loads(table.read_text())["data"]
    assert [row[0] for row in rows] == ["base", "sft", "grpo"]
    # Offline runs keep the config inside the run file (protobuf records; strings stay plain).
    [run_file] = wandb_run.glob("run-*.wandb")
    records = run_file.read_bytes()
    assert b"max_new_tokens" in records and b"grpo_conventions" in records, "config + record"
    assert b"sft-train/loss" in records and b"grpo-reward/total" in records, "stage prefixes"
    assert b"sft-val/accuracy" in records and b"grpo-val/accuracy" in records, "validation"
    import wandb

    assert wandb.run is None, "the job closed its W&B run"
