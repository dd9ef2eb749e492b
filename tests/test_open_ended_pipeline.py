"""An open-ended run end to end: SFT on PubMedQA's long answers, then text metrics in the eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrl.components import build_pools, build_specs
from medrl.evaluation import read_predictions
from medrl.stages.evaluate import check_open_ended
from medrl.train import run

FREE_TEXT = [
    "debug=smoke",
    "algorithm=sft",
    "dataset=pubmedqa",
    "format=free_text",
    "reward=free_text",
    "optimized_metric=eval/token_f1",
]


def test_sft_on_long_answers_then_eval_reports_text_metrics_with_intervals(
    compose, shared_dir, tmp_path_factory
):
    cfg = compose("train", FREE_TEXT)
    cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    cfg.evaluation.text_metrics.bertscore.cache_dir = cfg.model.cache_dir
    out = Path(cfg.paths.output_dir)

    result = run(cfg)

    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert set(summary) == {"base", "sft"}
    for name in ("exact_match", "token_f1", "rouge_l", "bertscore_f1"):
        values = summary["sft"]
        assert values[f"{name}_ci_low"] <= values[name] <= values[f"{name}_ci_high"]
        assert 0.0 <= values[name] <= 1.0
    assert "accuracy" not in summary["sft"], "open-ended answers have no accuracy"
    assert result == summary["sft"]["token_f1"]
    predictions = read_predictions(out / "eval" / "sft" / "predictions.jsonl")
    assert len(predictions) == 8 and all(p.reference for p in predictions)
    report = (out / "eval" / "report.md").read_text()
    assert "token F1 [95% CI]" in report and "BERTScore F1 [95% CI]" in report
    assert (out / "eval" / "comparison.png").stat().st_size > 0
    # Validation during SFT scores text overlap too, and follows token F1 (the open-ended default).
    rows = [
        json.loads(line) for line in (out / "validation" / "sft.jsonl").read_text().splitlines()
    ]
    assert rows and all("token_f1" in row and "accuracy" not in row for row in rows)
    selection = json.loads((out / "checkpoints" / "sft" / "manifest.json").read_text())["selection"]
    assert selection["metric"] == "val/token_f1"


def test_sampled_evaluation_of_open_answers_is_refused_before_any_model_loads(compose):
    cfg = compose("train", FREE_TEXT)
    specs = build_specs(cfg)
    records = list(build_pools(specs)["eval"])
    with pytest.raises(ValueError, match="evaluation.num_samples=4 with format=free_text"):
        check_open_ended(specs.output_format, records, num_samples=4)
    check_open_ended(specs.output_format, records, num_samples=1)  # references present: fine
