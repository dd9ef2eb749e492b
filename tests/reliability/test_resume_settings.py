"""What `resume` accepts and refuses, before any work starts: a folder to continue, settings
equal to the killed run's, and no silent overwrite of a folder that holds training state."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from medrl.checkpoints.training_state import ResumeError, TrainingStateCheckpoint
from medrl.data.resumable import ResumableDataLoader
from medrl.stages.resume import continue_in, fingerprint, resume_folder


def with_run_dir(cfg, folder, resume=None):
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
        cfg.resume = resume
    return cfg


def holding_training_state(folder):
    state = folder / "resume" / "grpo"
    state.mkdir(parents=True)
    (state / "step-000004.ckpt").write_bytes(b"")
    return folder


def test_resume_auto_in_an_empty_folder_starts_fresh(compose, tmp_path):
    assert resume_folder(with_run_dir(compose("train"), tmp_path, "auto")) is None


def test_resume_auto_in_a_folder_with_state_continues_there(compose, tmp_path):
    folder = holding_training_state(tmp_path / "run")
    assert resume_folder(with_run_dir(compose("train"), folder, "auto")) == folder


def test_resume_from_a_folder_that_does_not_exist_says_what_to_give(compose, tmp_path):
    cfg = with_run_dir(compose("train"), tmp_path / "new", str(tmp_path / "nope"))
    with pytest.raises(ResumeError, match=r"resume=.*/nope: no such run folder"):
        resume_folder(cfg)


def test_resume_from_a_folder_without_checkpoints_says_there_is_nothing_to_continue(
    compose, tmp_path
):
    (tmp_path / "empty").mkdir()
    cfg = with_run_dir(compose("train"), tmp_path / "new", str(tmp_path / "empty"))
    with pytest.raises(ResumeError, match="holds no checkpoints/ or resume/ folder"):
        resume_folder(cfg)


def test_a_fresh_run_refuses_a_folder_holding_training_state(compose, tmp_path):
    folder = holding_training_state(tmp_path / "run")
    with pytest.raises(ResumeError, match="pass resume=auto to continue it"):
        resume_folder(with_run_dir(compose("train"), folder))


def test_a_fresh_run_refuses_a_folder_holding_finished_stage_checkpoints(compose, tmp_path):
    stage = tmp_path / "run" / "checkpoints" / "sft"
    stage.mkdir(parents=True)
    (stage / "manifest.json").write_text("{}")
    with pytest.raises(ResumeError, match=r"already holds the stage checkpoints \['sft'\]"):
        resume_folder(with_run_dir(compose("train"), tmp_path / "run"))


def test_resume_checks_a_finished_stage_s_settings_before_any_work(compose, tmp_path):
    folder = tmp_path / "run"
    stage = folder / "checkpoints" / "sft"
    stage.mkdir(parents=True)
    (stage / "config.yaml").write_text(
        OmegaConf.to_yaml(compose("train", ["seed=1"]), resolve=True)
    )

    with pytest.raises(ResumeError) as caught:
        continue_in(with_run_dir(compose("train", ["seed=2"]), folder, "auto"), folder)

    assert "checkpoints/sft/config.yaml was written with other settings" in str(caught.value)
    assert "seed: 1 -> 2" in str(caught.value)


def test_resume_checks_the_saved_training_state_s_settings_before_any_work(compose, tmp_path):
    folder = tmp_path / "run"
    state = folder / "resume" / "grpo"
    state.mkdir(parents=True)
    saved = fingerprint(compose("train", ["grpo.module.group_size=4"]))
    (state / "settings.json").write_text(json.dumps(saved))

    with pytest.raises(ResumeError, match="grpo.module.group_size: 4 -> 8"):
        continue_in(with_run_dir(compose("train", ["grpo.module.group_size=8"]), folder), folder)


def test_resuming_with_other_settings_is_refused_listing_each_difference(compose, tmp_path):
    saved = fingerprint(compose("train", ["seed=1"]))
    current = fingerprint(compose("train", ["seed=2", "grpo.module.group_size=8"]))
    callback = TrainingStateCheckpoint(tmp_path, every_n_steps=1, keep_last=1, fingerprint=current)

    with pytest.raises(ResumeError) as caught:
        callback.load_state_dict({"fingerprint": saved, "rng": {}})

    message = str(caught.value)
    assert "seed: 1 -> 2" in message and "grpo.module.group_size: 4 -> 8" in message
    assert "start a fresh run (resume=null)" in message


def test_where_outputs_go_is_not_part_of_the_settings_a_resume_must_match(compose, tmp_path):
    first = with_run_dir(compose("train"), tmp_path / "a")
    second = with_run_dir(compose("train"), tmp_path / "b")
    assert fingerprint(first) == fingerprint(second)


def test_the_loader_resumes_mid_epoch_at_the_next_unseen_batch():
    straight = ResumableDataLoader(list(range(10)), batch_size=2, seed=3)
    order = [batch.tolist() for batch in straight]

    interrupted = ResumableDataLoader(list(range(10)), batch_size=2, seed=3)
    seen = []
    for batch in interrupted:
        seen.append(batch.tolist())
        if len(seen) == 2:
            break
    state = interrupted.state_dict()

    resumed = ResumableDataLoader(list(range(10)), batch_size=2, seed=3)
    resumed.load_state_dict(state)
    assert state == {"epoch": 0, "batches": 2}
    assert seen + [batch.tolist() for batch in resumed] == order
    # The skip applies once: the next pass over the same epoch is whole again.
    assert [batch.tolist() for batch in resumed] == order


def test_each_epoch_has_its_own_seeded_order():
    loader = ResumableDataLoader(list(range(8)), batch_size=8, seed=0)
    first = next(iter(loader))
    loader.sampler.set_epoch(1)
    second = next(iter(loader))
    assert sorted(first.tolist()) == sorted(second.tolist()) and not torch.equal(first, second)
