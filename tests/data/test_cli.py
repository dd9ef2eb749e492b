"""``python -m medrl.data``: composes, prints the summary, and its exit status means something."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from medrl.data import DatasetSpec
from medrl.utils.config import CONFIG_DIR, PROJECT_ROOT

from .builders import medmcqa_row, write_rows

DATASET_OPTIONS = sorted(path.stem for path in (CONFIG_DIR / "dataset").glob("*.yaml"))
# Options that mix several datasets (medrl/data/mixture.py) are tested in test_mixture.py.
MIXTURES = [
    name
    for name in DATASET_OPTIONS
    if "MixtureSpec" in (CONFIG_DIR / "dataset" / f"{name}.yaml").read_text()
]
DATASETS = [name for name in DATASET_OPTIONS if name not in MIXTURES]


def run_cli(
    *args: str, data_dir: Path, cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter, reading local files from ``data_dir`` only."""
    # The CLI must run from any folder, also when medrl is not pip-installed.
    python_path = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        **os.environ,
        "MEDRL_DATA_DIR": str(data_dir),
        "MEDRL_DATA_SOURCE": "local",
        "PYTHONPATH": os.pathsep.join(python_path),
    }
    return subprocess.run(
        [sys.executable, "-m", "medrl.data", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_four_datasets_and_the_mixture_have_configs():
    assert DATASETS == ["bioasq", "medmcqa", "medqa", "pubmedqa"]
    assert MIXTURES == ["medmcqa_medqa"]


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_option_composes_and_instantiates_a_spec(compose, name):
    spec = instantiate(compose("data", [f"dataset={name}"]).dataset)

    assert isinstance(spec, DatasetSpec)
    assert spec.name == name
    assert spec.eval_pool == "eval" and list(spec.pools)[0] == "eval"


def test_cli_prints_medqa_sizes_and_exits_0(shared_dir):
    result = run_cli("dataset=medqa", data_dir=shared_dir / "data")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1,273" in result.stdout
    assert "353" in result.stdout and "265" in result.stdout
    assert "MedQA train split is not available locally" in result.stdout
    assert "pools are disjoint" in result.stdout


def test_cli_writes_no_output_folder_or_log_file(shared_dir, tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    result = run_cli("dataset=pubmedqa", data_dir=shared_dir / "data", cwd=workdir)

    assert result.returncode == 0, result.stdout + result.stderr
    assert list(workdir.iterdir()) == []


def test_cli_exits_1_when_pools_overlap(tmp_path):
    # Two split files that reuse the same ids: construction keeps positions disjoint, and only
    # the independent overlap check can notice the shared ids.
    folder = tmp_path / "medmcqa"
    write_rows(folder / "validation.jsonl", [medmcqa_row(i, id=f"q{i}") for i in range(4)])
    write_rows(folder / "train.jsonl", [medmcqa_row(10 + i, id=f"q{i}") for i in range(4)])

    result = run_cli(
        "dataset=medmcqa",
        "dataset.local.splits.validation=validation.jsonl",
        "+dataset.local.splits.train=train.jsonl",
        "~dataset.local.split_aliases.train",
        "dataset.pools.eval.size=4",
        "dataset.pools.sft.size=2",
        "dataset.pools.grpo.size=2",
        "~dataset.pools.val",
        data_dir=tmp_path,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "pools overlap" in result.stdout


def test_cli_exits_2_with_the_message_when_data_is_missing(tmp_path):
    result = run_cli("dataset=medqa", data_dir=tmp_path)

    assert result.returncode == 2
    assert "data error" in result.stdout and "MEDRL_DATA_DIR" in result.stdout
