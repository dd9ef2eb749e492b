"""Checks 1-3: the grpo, sft and evaluation blocks' values, from the config alone."""

from __future__ import annotations

import pytest

from medrl.preflight import PreflightError, config_checks, preflight_config
from medrl.stages.evaluate import eval_sampling
from medrl.utils.settings import SettingsError


def config_error(compose, *overrides: str) -> PreflightError:
    with pytest.raises(PreflightError) as caught:
        preflight_config(compose("train", ["debug=smoke", *overrides]))
    return caught.value


def test_the_smoke_config_passes_every_config_check(compose):
    results = preflight_config(compose("train", ["debug=smoke"]))
    assert results and all(result.status == "pass" for result in results)


def test_group_size_one_fails_naming_the_key_and_the_way_out(compose):
    error = config_error(compose, "grpo.module.group_size=1")
    assert [failure.key for failure in error.failures] == ["grpo.module.group_size"]
    assert (
        "grpo.module.group_size=1: GRPO divides advantages by the group's std, so group_size "
        "must be >= 2 (or grpo.module.advantage.std_scope=none)"
    ) in str(error)


def test_group_size_one_passes_without_std_scaling_but_warns_that_advantages_are_zero(compose):
    cfg = compose("train", ["debug=smoke", "grpo.module.group_size=1", "grpo=dr_grpo"])
    results = preflight_config(cfg)
    (group,) = [r for r in results if r.key == "grpo.module.group_size"]
    assert group.ok and group.status == "warn"
    assert "every advantage is 0" in group.message


def test_a_micro_batch_that_does_not_divide_b_times_g_warns_naming_all_three_keys(compose):
    # The GRPO module runs a smaller last pass, so this is legal: a warning, not a failure.
    results = preflight_config(compose("train", ["debug=smoke", "grpo.module.micro_batch_size=3"]))
    (micro,) = [r for r in results if r.status == "warn"]
    assert micro.ok and micro.key == "grpo.module.micro_batch_size"
    assert micro.message.startswith("grpo.module.micro_batch_size=3: does not divide")
    assert "grpo.module.prompts_per_step * grpo.module.group_size = 2 * 2 = 4" in micro.message


def test_a_micro_batch_holding_the_whole_step_passes(compose):
    results = preflight_config(compose("train", ["debug=smoke", "grpo.module.micro_batch_size=16"]))
    assert all(r.status == "pass" for r in results)
    (grpo,) = [r for r in results if r.key == "grpo"]
    assert grpo.message == "grpo: every setting valid over 1 process(es)"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("grpo.module.sampling.max_new_tokens=-1", "grpo.module.sampling.max_new_tokens"),
        ("grpo.module.prompts_per_step=0", "grpo.module.prompts_per_step"),
        ("grpo.module.mu=0", "grpo.module.mu"),
        ("grpo.module.kl.beta=-0.1", "grpo.module.kl.beta"),
        ("grpo.module.clip.eps_low=0", "grpo.module.clip.eps_low"),
        ("grpo.module.clip.eps_low=1.5", "grpo.module.clip.eps_low"),
        ("grpo.module.clip.eps_high=0", "grpo.module.clip.eps_high"),
        ("grpo.module.lr=0", "grpo.module.lr"),
        ("grpo.max_steps=0", "grpo.max_steps"),
        ("grpo.module.loss_aggregation=sum", "grpo.module.loss_aggregation"),
        ("grpo.module.advantage.std_scope=global", "grpo.module.advantage.std_scope"),
        ("grpo.module.sampling.temperature=0", "grpo.module.sampling.temperature"),
        ("grpo.module.sampling.top_k=-1", "grpo.module.sampling.top_k"),
        ("grpo.module.scheduler=step", "grpo.module.scheduler"),
        ("grpo.module.warmup_ratio=1.5", "grpo.module.warmup_ratio"),
        ("grpo.module.grad_clip=-1", "grpo.module.grad_clip"),
        ("grpo.module.sample_table_every=-1", "grpo.module.sample_table_every"),
        ("grpo.module.advantage.eps=-0.5", "grpo.module.advantage.eps"),
        ("grpo.module.advantage.estimator=loo", "grpo.module.advantage.estimator"),
        ("grpo.module.advantage.aggregation=gdpo", "grpo.module.advantage.aggregation"),
        ("grpo.module.advantage.batch_renormalize=1", "grpo.module.advantage.batch_renormalize"),
        ("grpo.module.importance_sampling=seq", "grpo.module.importance_sampling"),
        ("grpo.module.sequence_clip.eps_low=0", "grpo.module.sequence_clip.eps_low"),
        ("grpo.module.sequence_clip.eps_high=-1", "grpo.module.sequence_clip.eps_high"),
        ("grpo.module.policy_loss=ppo", "grpo.module.policy_loss"),
        ("grpo.module.entropy.coef=-0.01", "grpo.module.entropy.coef"),
        ("grpo.module.entropy.top_quantile=0", "grpo.module.entropy.top_quantile"),
        ("grpo.module.entropy.top_quantile=1.5", "grpo.module.entropy.top_quantile"),
    ],
)
def test_each_bad_grpo_value_fails_naming_its_key(compose, override, key):
    error = config_error(compose, override)
    assert key in [failure.key for failure in error.failures]
    value = override.split("=", 1)[1]
    assert f"{key}={value}" in str(error) or f"{key}:" in str(error)


@pytest.mark.parametrize("preset", ["standard", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "gdpo"])
def test_every_grpo_preset_passes_the_config_checks(compose, preset):
    results = preflight_config(compose("train", ["debug=smoke", f"grpo={preset}"]))
    assert all(result.status == "pass" for result in results if result.name == "grpo")


def test_eps_zero_is_the_papers_formula_and_passes(compose):
    results = preflight_config(compose("train", ["debug=smoke", "grpo.module.advantage.eps=0"]))
    assert all(r.status == "pass" for r in results)


def test_dual_clip_with_cispo_fails_naming_the_key_and_the_way_out(compose):
    error = config_error(compose, "grpo=cispo", "grpo.module.clip.dual_clip=3.0")
    assert [failure.key for failure in error.failures] == ["grpo.module.clip.dual_clip"]
    assert "applies to grpo.module.policy_loss=clip only" in str(error)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("sft.batch_size=0", "sft.batch_size"),
        ("sft.grad_accum=0", "sft.grad_accum"),
        ("sft.max_seq_length=0", "sft.max_seq_length"),
        ("sft.module.lr=-1e-4", "sft.module.lr"),
        ("sft.val_fraction=1.0", "sft.val_fraction"),
        ("sft.module.scheduler=step", "sft.module.scheduler"),
        ("sft.module.weight_decay=-1", "sft.module.weight_decay"),
        ("sft.val_check_interval=0", "sft.val_check_interval"),
        ("sft.num_workers=-1", "sft.num_workers"),
    ],
)
def test_each_bad_sft_value_fails_naming_its_key(compose, override, key):
    error = config_error(compose, override)
    assert [failure.key for failure in error.failures] == [key]
    assert str(error).count(f"{key}=") == 1


def test_sft_that_would_not_train_names_epochs_and_max_steps(compose):
    error = config_error(compose, "sft.epochs=0", "sft.max_steps=-1")
    assert "sft.epochs=0: with sft.max_steps=-1 SFT would not train" in str(error)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("checkpointing.every_n_steps=0", "checkpointing.every_n_steps"),
        ("checkpointing.keep_last=0", "checkpointing.keep_last"),
        ("numeric_faults.max_consecutive=0", "numeric_faults.max_consecutive"),
    ],
)
def test_each_bad_checkpointing_or_fault_setting_fails_naming_its_key(compose, override, key):
    error = config_error(compose, override)
    assert [failure.key for failure in error.failures] == [key]
    assert f"{override}: must be an integer >= 1" in str(error)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("evaluation.batch_size=0", "evaluation.batch_size"),
        ("evaluation.limit=0", "evaluation.limit"),
        ("evaluation.sampling.max_new_tokens=-5", "evaluation.sampling.max_new_tokens"),
        ("evaluation.num_samples=0", "evaluation.num_samples"),
    ],
)
def test_each_bad_evaluation_value_fails_naming_its_key(compose, override, key):
    error = config_error(compose, override)
    assert [failure.key for failure in error.failures] == [key]
    assert key in str(error)


def test_sampled_evaluation_with_greedy_decoding_is_eval_samplings_own_message(compose):
    error = config_error(compose, "evaluation.num_samples=4")
    message = "evaluation.num_samples=4: needs evaluation.sampling.greedy=false"
    assert message in str(error)
    with pytest.raises(SettingsError, match=message):  # the stage's own check, same words
        eval_sampling(compose("train", ["debug=smoke", "evaluation.num_samples=4"]).evaluation)


def test_a_bad_length_does_not_hide_the_other_sampling_errors(compose):
    error = config_error(
        compose, "evaluation.sampling.max_new_tokens=-1", "evaluation.num_samples=0"
    )
    keys = [failure.key for failure in error.failures]
    assert keys == ["evaluation.num_samples", "evaluation.sampling.max_new_tokens"]


def test_only_the_stages_that_run_are_checked(compose):
    cfg = compose("train", ["debug=smoke", "algorithm=sft", "grpo.module.group_size=1"])
    results = preflight_config(cfg)  # stages=[sft, eval]: the broken GRPO block is not read
    assert not [r for r in results if r.name == "grpo" or (r.key or "").startswith("grpo.")]
    assert {r.name for r in results} >= {"sft", "evaluation"}
    assert "rewards" not in {r.name for r in results}, "only GRPO reads the reward set"


def test_evaluation_alone_checks_neither_training_block_nor_rewards(compose):
    cfg = compose("train", ["debug=smoke", "stages=[eval]", "sft.batch_size=0"])
    assert {r.name for r in config_checks(cfg, ["eval"])} == {"evaluation"}


def test_several_failures_are_reported_together_in_one_error(compose):
    error = config_error(
        compose,
        "grpo.module.group_size=1",
        "grpo.module.lr=0",
        "sft.batch_size=0",
        "evaluation.limit=0",
    )
    keys = ["grpo.module.lr", "grpo.module.group_size", "sft.batch_size", "evaluation.limit"]
    assert [failure.key for failure in error.failures] == keys
    assert str(error).startswith("preflight: 4 check(s) failed before any weights were loaded")
    assert all(f"  - {key}=" in str(error) for key in keys)


def test_disabled_preflight_checks_nothing(compose):
    cfg = compose("train", ["debug=smoke", "grpo.module.group_size=1", "preflight.enabled=false"])
    assert preflight_config(cfg) == []


def test_a_global_batch_that_does_not_split_over_the_processes_fails_before_launch(compose):
    error = config_error(
        compose,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "grpo.module.prompts_per_step=3",
        "sft.batch_size=5",
    )
    keys = [failure.key for failure in error.failures]
    assert keys == ["grpo.module.prompts_per_step", "sft.batch_size"]
    assert "must be a multiple of the 2 processes (trainer.devices x trainer.num_nodes)" in str(
        error
    )


def test_global_batches_that_split_over_the_processes_pass(compose):
    cfg = compose(
        "train", ["debug=smoke", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    )
    results = {r.key: r for r in preflight_config(cfg)}
    assert results["grpo"].message == "grpo: every setting valid over 2 process(es)"
    assert results["sft"].message == "sft: every setting valid over 2 process(es)"
    assert results["grpo"].status == results["sft"].status == "pass"


def test_dynamic_sampling_on_several_processes_fails_naming_the_way_out(compose):
    error = config_error(
        compose,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "grpo.module.dynamic_sampling.enabled=true",
        "grpo.module.dynamic_sampling.max_extra_draws=1",
    )
    assert [f.key for f in error.failures] == ["grpo.module.dynamic_sampling.enabled"]
    assert "trainer.devices=1" in str(error)
