"""experiments/model_sizes/compare_real.py: the real-weights study's table and paired tests,
checked on four hand-made items."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import yaml

from medrl.utils.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "experiments" / "model_sizes" / "compare_real.py"
GOLD = ["A", "B", "C", "A"]  # majority "A": 0.5


def load_script():
    spec = importlib.util.spec_from_file_location("compare_real", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through it
    spec.loader.exec_module(module)
    return module


def write(path, right, choice=False):
    """Four predictions on items q0..q3; `right` says which are correct."""
    with open(path, "w") as fh:
        for i, (gold, ok) in enumerate(zip(GOLD[: len(right)], right, strict=True)):
            row = {
                "id": f"q{i}",
                "prompt": "p",
                "completion": gold if ok else "D",
                "answer": gold if ok else "D",
                "gold": gold,
                "correct": ok,
                "format_ok": ok or i != 3,
                "json_valid": False,
                "schema_ok": False,
                "num_tokens": 1,
                "truncated": False,
            }
            if choice:
                row.update(option_logprobs={"A": -1.0}, answer_norm=row["answer"], correct_norm=ok)
            fh.write(json.dumps(row) + "\n")


@pytest.fixture
def sources(tmp_path):
    # small model: right on q0 only everywhere; large: q0..q2 generated, q0..q1 forced choice
    right = {
        "small": {"generate": [1, 0, 0, 0], "choice_logprob": [1, 0, 0, 0]},
        "large": {"generate": [1, 1, 1, 0], "choice_logprob": [1, 1, 0, 0]},
    }
    paths = {}
    for model, modes in right.items():
        paths[model] = {}
        for mode, flags in modes.items():
            paths[model][mode] = {}
            for point in ("base", "sft", "grpo"):
                name = f"{model}_{mode}_{point}.jsonl"
                write(tmp_path / name, [bool(f) for f in flags], choice=mode == "choice_logprob")
                paths[model][mode][point] = name
    file = tmp_path / "sources.yaml"
    file.write_text(
        yaml.safe_dump({"items": 4, "models": ["small", "large"], "predictions": paths})
    )
    return file


def test_the_table_gives_accuracy_parse_rate_and_majority_baseline(sources, tmp_path):
    load_script().main([str(sources), "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "table.md").read_text()
    assert 'majority baseline (always "A"): 0.500' in table
    # large, generated: 3 of 4 right; parse rate 3/4 (q3 wrong and unparsed)
    assert "| large | base | generated | 4 | 0.750 [" in table and "| 0.750 |" in table
    # large, forced choice: 2 of 4, raw and length-normalized; no parse rate
    assert (
        "| large | SFT | forced choice | 4 | 0.500 [0.150, 0.850] | 0.500 [0.150, 0.850] |  |"
        in table
    )
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 0


def test_the_paired_tests_count_discordant_items_by_hand(sources, tmp_path):
    load_script().main([str(sources), "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    rows = (tmp_path / "out" / "comparisons.md").read_text().splitlines()[2:]
    assert len(rows) == 6 + 8 + 6  # models per point and mode; steps; modes per point
    # large vs small, generated: large alone right on q1, q2 -> b = 0, c = 2, diff +0.5
    assert "| small base (generated) | large base (generated) | 4 | +0.500 [" in rows[0]
    assert "| 0 / 2 | 0.500 |" in rows[0]
    # forced choice vs generated, large base: generated alone right on q2 -> b = 1, c = 0
    assert any(
        "large base (generated) | large base (forced choice)" in r and "| 1 / 0 |" in r
        for r in rows
    )


def test_items_that_differ_between_files_are_refused(sources, tmp_path):
    data = yaml.safe_load(sources.read_text())
    write(tmp_path / "short.jsonl", [True, False, False])  # q0..q2 only
    data["predictions"]["large"]["generate"]["sft"] = "short.jsonl"
    sources.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="large SFT \\(generated\\) covers other items"):
        load_script().main([str(sources), "--root", str(tmp_path)])
