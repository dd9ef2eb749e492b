"""Stages with their own data (medrl/stages/plan.py): what each stage's config is, and the errors
a bad definition gets before anything loads."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from medrl.stages.plan import RUNNERS, StageConfigError, stage_plan
from medrl.train import STAGE_RUNNERS

CURRICULUM = ["experiment=curriculum_open_closed"]


def test_a_plain_run_reads_the_run_config_in_every_stage(compose):
    cfg = compose("train", [])

    plan = stage_plan(cfg)

    assert [(s.name, s.runner) for s in plan] == [
        ("sft", "sft"),
        ("grpo", "grpo"),
        ("eval", "eval"),
    ]
    assert all(stage.cfg is cfg and not stage.defined for stage in plan)


def test_a_defined_stage_replaces_its_groups_and_merges_its_blocks(compose):
    cfg = compose("train", CURRICULUM)

    sft_open, sft, grpo, evaluation = stage_plan(cfg)

    assert (sft_open.name, sft_open.runner, sft_open.defined) == ("sft_open", "sft", True)
    # format: the whole free_text group, none of the run's letter keys left over
    assert sft_open.cfg.format._target_ == "medrl.prompts.FreeTextFormat"
    assert "case_sensitive" not in sft_open.cfg.format
    # sft: the stage's max_steps over the run's block, every other key the run's
    assert sft_open.cfg.sft.max_steps == 8
    assert sft_open.cfg.sft.module.lr == cfg.sft.module.lr
    # a runner's name can carry settings too; the run's config itself is left as it was
    assert (sft.runner, sft.cfg.sft.max_steps, sft.cfg.format._target_) == (
        "sft",
        8,
        "medrl.prompts.LetterFormat",
    )
    assert cfg.sft.max_steps == 16 and cfg.format._target_ == "medrl.prompts.LetterFormat"
    assert grpo.cfg is cfg and evaluation.cfg is cfg


def test_a_stage_that_is_neither_runner_nor_defined_names_both_fixes(compose):
    cfg = compose("train", ["stages=[sft_open,eval]"])

    with pytest.raises(
        StageConfigError, match=r"'sft_open' is neither a runner .* stage_defs.sft_open"
    ):
        stage_plan(cfg)


def test_unknown_keys_of_a_definition_are_listed_with_the_valid_ones(compose):
    cfg = compose("train", [*CURRICULUM, "+stage_defs.sft_open.optimizer={lr: 1}"])

    with pytest.raises(
        StageConfigError, match=r"stage_defs.sft_open: unknown keys \['optimizer'\]"
    ):
        stage_plan(cfg)


def test_a_definition_needs_a_runner_when_its_name_is_not_one(compose):
    cfg = compose("train", [*CURRICULUM, "stage_defs.sft_open.runner=distill"])

    with pytest.raises(StageConfigError, match=r"stage_defs.sft_open.runner='distill'; choose one"):
        stage_plan(cfg)


def test_a_typo_in_a_stage_block_names_the_stage_and_the_block(compose):
    cfg = compose("train", [*CURRICULUM, "+stage_defs.sft_open.sft.max_stepz=3"])

    with pytest.raises(StageConfigError, match=r"stage_defs.sft_open.sft: .*max_stepz"):
        stage_plan(cfg)


def test_a_definition_no_stage_runs_is_refused(compose):
    cfg = compose("train", [*CURRICULUM, "stages=[sft,grpo,eval]"])

    with pytest.raises(StageConfigError, match=r"defines \['sft_open'\], which stages=.* does not"):
        stage_plan(cfg)


def test_a_stage_listed_twice_is_refused(compose):
    cfg = compose("train", ["stages=[sft,sft,eval]"])

    with pytest.raises(StageConfigError, match=r"\['sft'\] appear more than once"):
        stage_plan(cfg)


def test_a_stage_can_read_a_dataset_mixture(compose):
    cfg = compose("train", ["+dataset@stage_defs.sft.dataset=medmcqa_medqa"])

    sft = stage_plan(cfg)[0]

    assert sft.defined and sft.runner == "sft"
    assert sft.cfg.dataset._target_ == "medrl.data.MixtureSpec"
    assert OmegaConf.to_container(sft.cfg.dataset.ratios) == {"medmcqa": 0.5, "medqa": 0.5}
    assert cfg.dataset.name == "medmcqa"


def test_the_plan_knows_exactly_the_runners_the_entry_point_has():
    assert tuple(STAGE_RUNNERS) == RUNNERS
