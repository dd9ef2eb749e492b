"""One schema per setting, beyond grpo.module (tests/algorithms/test_grpo_settings.py): the
sampling and engine blocks, the sft and evaluation blocks, checkpointing and numeric faults.
Each block is checked by one function; the code that reads it raises on the same problems that
preflight reports, in the same words, keyed as the config spells them."""

from __future__ import annotations

import pytest

from medrl.algorithms.numeric_faults import FaultCounter
from medrl.algorithms.sft_settings import sft_problems
from medrl.checkpoints.training_state import TrainingStateCheckpoint
from medrl.evaluation.settings import evaluation_problems
from medrl.preflight import PreflightError, preflight_config
from medrl.rollout import EngineSettings, SamplingSettings
from medrl.stages.evaluate import eval_sampling
from medrl.utils.settings import SettingsError

SFT = dict(
    batch_size=8,
    grad_accum=1,
    grad_clip=1.0,
    max_seq_length=1024,
    epochs=1,
    max_steps=-1,
    val_fraction=0.05,
    val_check_interval=1.0,
    num_workers=0,
    module=dict(lr=2e-4, weight_decay=0.0, warmup_ratio=0.03, scheduler="cosine"),
)
EVALUATION = dict(include_base=True, batch_size=16, limit=None, num_samples=1)


def keys(problems) -> list[str]:
    return [p.key for p in problems]


def preflight_failure(compose, *overrides: str) -> str:
    with pytest.raises(PreflightError) as caught:
        preflight_config(compose("train", ["debug=smoke", *overrides]))
    (failure,) = caught.value.failures
    return failure.message


# --- sampling and engine ------------------------------------------------------------------


def test_sampling_problems_are_all_named_at_once_and_missing_keys_take_the_defaults():
    assert SamplingSettings.check({}) == []
    problems = SamplingSettings.check({"temperature": 0, "top_p": 1.5, "top_k": -1})
    assert keys(problems) == ["temperature", "top_p", "top_k"]
    assert problems[2].message("evaluation.sampling.") == (
        "evaluation.sampling.top_k=-1: must be an integer >= 0 (0 = off)"
    )


def test_greedy_decoding_ignores_the_sampling_knobs_but_not_the_length():
    greedy = {"greedy": True, "temperature": 0, "top_p": 0, "max_new_tokens": 0}
    assert keys(SamplingSettings.check(greedy)) == ["max_new_tokens"]
    assert SamplingSettings(greedy=True, temperature=0).temperature == 0


def test_a_bad_engine_value_names_the_engine_key():
    with pytest.raises(SettingsError, match=r"engine.kernel_cache_capacity=0: must be an integer"):
        EngineSettings(kernel_cache_capacity=0)
    assert keys(EngineSettings.check({"pack_completions": "yes", "samplr": "hf"})) == [
        "samplr",
        "pack_completions",
    ]


# --- sft ----------------------------------------------------------------------------------


def test_the_sft_defaults_are_valid_on_any_number_of_processes_that_divides_the_batch():
    assert sft_problems(SFT) == []
    assert sft_problems(SFT, world_size=4) == []
    assert keys(sft_problems(SFT, world_size=3)) == ["batch_size"]


def test_every_sft_problem_is_named_at_once_module_keys_below_module():
    bad = dict(SFT, grad_accum=0, val_fraction=1.0, module=dict(SFT["module"], scheduler="step"))
    assert keys(sft_problems(bad)) == ["grad_accum", "val_fraction", "module.scheduler"]


def test_sft_that_would_not_train_names_both_schedule_keys():
    (problem,) = sft_problems(dict(SFT, epochs=0, max_steps=0))
    assert problem.message("sft.") == (
        "sft.epochs=0: with sft.max_steps=0 SFT would not train; set sft.epochs >= 1 or "
        "sft.max_steps > 0"
    )
    assert sft_problems(dict(SFT, epochs=0, max_steps=5)) == [], "max_steps > 0 trains by steps"


@pytest.mark.parametrize("interval", [0.0, 1.5, 0, True])
def test_a_validation_interval_is_a_fraction_of_an_epoch_or_a_number_of_batches(interval):
    assert keys(sft_problems(dict(SFT, val_check_interval=interval))) == ["val_check_interval"]
    assert sft_problems(dict(SFT, val_check_interval=50)) == []


def test_preflight_and_the_sft_module_report_the_same_problem(compose, tiny_spec):
    from hydra.utils import instantiate

    from medrl.models import LoraAdapter, load_policy

    message = preflight_failure(compose, "sft.module.lr=0")
    assert message == "sft.module.lr=0: must be a number > 0"
    cfg = compose("train", ["debug=smoke", "sft.module.lr=0"])
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    with pytest.raises(SettingsError) as built:
        instantiate(cfg.sft.module)(model=policy.model)
    assert str(built.value) == message


# --- evaluation ---------------------------------------------------------------------------


def test_evaluation_problems_name_their_keys_and_the_rule_between_them():
    assert evaluation_problems(EVALUATION) == []
    problems = evaluation_problems(dict(EVALUATION, limit=0, sampling={"max_new_tokens": 0}))
    assert keys(problems) == ["limit", "sampling.max_new_tokens"]
    (votes,) = evaluation_problems(dict(EVALUATION, num_samples=4, sampling={"greedy": True}))
    assert votes.message("evaluation.") == (
        "evaluation.num_samples=4: needs evaluation.sampling.greedy=false (greedy decoding "
        "gives k identical completions)"
    )
    sampled = dict(EVALUATION, num_samples=4, sampling={"greedy": False})
    assert evaluation_problems(sampled) == []


def test_preflight_and_the_eval_stage_report_the_same_problem(compose):
    override = "evaluation.sampling.top_p=0"
    message = preflight_failure(compose, override, "evaluation.sampling.greedy=false")
    cfg = compose("train", ["debug=smoke", override, "evaluation.sampling.greedy=false"])
    with pytest.raises(SettingsError) as stage:
        eval_sampling(cfg.evaluation)
    assert str(stage.value) == message == "evaluation.sampling.top_p=0: must be in (0, 1] (1 = off)"


# --- checkpointing and numeric faults -----------------------------------------------------


@pytest.mark.parametrize(
    ("override", "build"),
    [
        (
            "checkpointing.keep_last=0",
            lambda tmp: TrainingStateCheckpoint(tmp, every_n_steps=10, keep_last=0, fingerprint={}),
        ),
        ("numeric_faults.max_consecutive=0", lambda tmp: FaultCounter(0)),
    ],
)
def test_preflight_and_the_training_code_report_the_same_problem(
    compose, tmp_path, override, build
):
    message = preflight_failure(compose, override)
    assert message.startswith(f"{override}: must be an integer >= 1")
    with pytest.raises(SettingsError) as built:
        build(tmp_path)
    assert str(built.value) == message


# --- values that are not blocks, unknown keys, the stages' own check ------------------------


def test_a_value_where_a_block_belongs_is_named_not_a_crash(compose):
    error = preflight_failure(compose, "grpo.module.clip=0.2")
    assert error.startswith("grpo.module.clip=0.2: must be a block of settings")
    assert keys(evaluation_problems(dict(EVALUATION, sampling=0.5))) == ["sampling"]
    assert keys(sft_problems(dict(SFT, module=1e-4))) == ["module"]


def test_building_a_block_from_config_values_names_an_unknown_key():
    from medrl.checkpoints.training_state import CheckpointingSettings

    with pytest.raises(SettingsError, match=r"checkpointing.every_n_step=5: is not a setting"):
        CheckpointingSettings.from_values({"every_n_step": 5})


def test_the_training_stages_check_their_shared_blocks_before_loading_weights(compose):
    from medrl.stages.context import check_training_blocks

    check_training_blocks(compose("train", ["debug=smoke"]))  # valid: nothing raised
    cfg = compose("train", ["debug=smoke", "engine.sampler=vllm", "checkpointing.keep_last=0"])
    with pytest.raises(SettingsError, match=r"checkpointing.keep_last=0"):
        check_training_blocks(cfg)


@pytest.mark.parametrize(
    "override", ["sft.grad_clip=null", "sft.module.warmup_ratio=1.0", "sft.val_check_interval=null"]
)
def test_the_edges_lightning_and_the_schedule_accept_pass(compose, override):
    results = preflight_config(compose("train", ["debug=smoke", override]))
    assert all(r.status == "pass" for r in results if r.name == "sft")
