"""A curriculum end to end on the tiny model: SFT on PubMedQA's long answers (free_text), then on
its labels (letter), then GRPO and evaluation on the closed task, each point scored there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from medrl.checkpoints import LineageError, Manifest
from medrl.stages.context import RunContext
from medrl.stages.evaluate import load_for_eval
from medrl.stages.start import checkpoint_point
from medrl.train import run

CURRICULUM = [
    "debug=smoke",
    "experiment=curriculum_open_closed",
    "stage_defs.sft_open.sft.max_steps=1",
    "stage_defs.sft.sft.max_steps=1",
    "grpo.max_steps=1",
    "evaluation.points=null",
    "evaluation.limit=4",
]


@pytest.fixture(scope="module")
def curriculum_run(shared_dir, tmp_path_factory):
    """One run of the curriculum; the tests read its folder."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from medrl.utils.config import CONFIG_DIR

    out = tmp_path_factory.mktemp("curriculum") / "run"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=CURRICULUM, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
        del cfg["hydra"]
    run(cfg)
    GlobalHydra.instance().clear()
    return cfg, out


def test_each_stage_trains_in_its_own_format_from_the_one_before(curriculum_run):
    _, out = curriculum_run

    sft_open = Manifest.read(out / "checkpoints" / "sft_open")
    sft = Manifest.read(out / "checkpoints" / "sft")
    grpo = Manifest.read(out / "checkpoints" / "grpo")

    assert sft_open.output_format["name"] == "free_text"
    assert sft.output_format["name"] == grpo.output_format["name"] == "letter"
    assert sft_open.parent.kind == "model"
    assert Path(sft.parent.location) == out / "checkpoints" / "sft_open"
    assert sft.parent.weights_hash == sft_open.weights_hash
    assert Path(grpo.parent.location) == out / "checkpoints" / "sft"


def test_every_point_is_scored_on_the_final_closed_task(curriculum_run):
    _, out = curriculum_run

    summary = json.loads((out / "eval" / "summary.json").read_text())

    assert list(summary) == ["sft_open", "sft", "grpo"]
    for values in summary.values():
        assert values["n"] == 4
        assert values["accuracy_ci_low"] <= values["accuracy"] <= values["accuracy_ci_high"]
        assert "token_f1" not in values, "scored as labels, not as open text"
    results = json.loads((out / "results.json").read_text())
    assert results["optimized_metric"]["value"] == summary["grpo"]["accuracy"]


def test_the_defined_stage_gets_its_own_preflight_report(curriculum_run):
    _, out = curriculum_run

    own = json.loads((out / "preflight-sft_open.json").read_text())
    run_wide = json.loads((out / "preflight.json").read_text())

    # only an open-ended format checks that every record has a reference answer
    assert own["ok"] and any(check["name"] == "references" for check in own["checks"])
    assert run_wide["ok"] and not any(c["name"] == "references" for c in run_wide["checks"])


def test_a_point_whose_checkpoint_was_trained_for_another_format_is_refused(curriculum_run):
    cfg, out = curriculum_run
    letter = instantiate(cfg.format)
    specs = type("Specs", (), {"output_format": letter})()
    ctx = RunContext(cfg=cfg, specs=specs, pools={}, output_dir=out)
    model = instantiate(cfg.model)
    # sft_open's manifest records free_text: claiming it was trained for letter is a lineage lie
    point = checkpoint_point(out / "checkpoints" / "sft_open", model, output_format=letter)

    with pytest.raises(LineageError, match="was trained for output format"):
        load_for_eval(ctx, point)
