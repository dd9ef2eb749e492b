"""Fixtures for the data tests: small datasets on disk (builders.py has the row builders)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from medrl.data.spec import DatasetSpec

from .builders import make_spec, medmcqa_row, write_rows


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data folder, laid out like ../shared/data once a test writes into it."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def medmcqa_dir(data_dir: Path) -> Path:
    """data_dir/medmcqa/validation.jsonl.gz with 40 distinct, valid rows."""
    write_rows(data_dir / "medmcqa" / "validation.jsonl.gz", [medmcqa_row(i) for i in range(40)])
    return data_dir / "medmcqa"


@pytest.fixture
def medmcqa_spec(medmcqa_dir: Path) -> Callable[..., DatasetSpec]:
    """medmcqa_spec(pools=..., **fields): a MedMCQA spec on the 40-row validation file, with
    ``train`` aliased to it as in conf/dataset/medmcqa.yaml."""

    def build(pools: Mapping[str, Mapping[str, Any]] | None = None, **fields: Any) -> DatasetSpec:
        pools = pools or {
            "eval": {"split": "validation", "size": 10},
            "sft": {"split": "train", "size": 10},
            "grpo": {"split": "train", "size": 10},
        }
        fields.setdefault("split_aliases", {"train": "validation"})
        return make_spec(
            "medmcqa", medmcqa_dir, {"validation": "validation.jsonl.gz"}, pools, **fields
        )

    return build
