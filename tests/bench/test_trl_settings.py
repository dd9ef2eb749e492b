"""medrl settings -> TRL config fields: the pure mapping, and (with trl installed) that TRL
accepts them and derives the same batch geometry."""

from __future__ import annotations

import dataclasses

import pytest

from medrl.bench.settings import grpo_kwargs, sft_kwargs
from medrl.bench.trl_settings import (
    UnmappableSetting,
    grpo_config_kwargs,
    lora_config_kwargs,
    sft_config_kwargs,
)
from medrl.models import FullFinetune, LoraAdapter, QLoraAdapter


def defaults(compose, *overrides):
    return grpo_kwargs(compose("bench", list(overrides)))


def mapped(module, **kwargs):
    options = dict(rollout_steps=7, device="cpu", gradient_checkpointing=False, output_dir="x")
    return grpo_config_kwargs(module, **{**options, **kwargs})


def test_the_default_grpo_settings_map_field_by_field(compose):
    args = mapped(defaults(compose))
    expected = {
        "per_device_train_batch_size": 4,  # micro_batch_size completions per forward/backward
        "gradient_accumulation_steps": 4,  # B*G = 16 completions per optimizer step
        "num_generations": 4,
        "num_iterations": 1,
        "max_completion_length": 64,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": None,
        "scale_rewards": "group",
        "epsilon": 0.2,
        "epsilon_high": 0.2,
        "beta": 0.04,
        "use_bias_correction_kl": False,
        "loss_type": "grpo",
        "mask_truncated_completions": False,
        "learning_rate": 3e-5,
        "weight_decay": 0.0,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": 0,
        "max_grad_norm": 1.0,
        "max_steps": 7,
        "seed": 42,
        "disable_dropout": True,
        "gradient_checkpointing": False,
        "optim": "adamw_torch",
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
    }
    assert {k: args[k] for k in expected} == expected


def test_each_loss_aggregation_and_std_scope_has_its_trl_name(compose):
    pairs = {
        "seq_mean_token_mean": "grpo",
        "token_mean": "dapo",
        "seq_mean_token_sum_norm": "dr_grpo",
    }
    for aggregation, loss_type in pairs.items():
        module = defaults(compose, f"grpo.module.loss_aggregation={aggregation}")
        assert mapped(module)["loss_type"] == loss_type
    for scope in ("group", "batch", "none"):
        module = defaults(compose, f"grpo.module.advantage.std_scope={scope}")
        assert mapped(module)["scale_rewards"] == scope


def test_mu_and_warmup_count_optimizer_steps_and_min_p_zero_is_off(compose):
    module = defaults(
        compose,
        "grpo.module.mu=2",
        "grpo.module.warmup_ratio=0.25",
        "grpo.module.sampling.min_p=0.1",
    )
    args = mapped(module, rollout_steps=4)
    assert (args["num_iterations"], args["max_steps"], args["warmup_steps"]) == (2, 8, 2)
    assert args["min_p"] == 0.1


def test_precision_maps_to_trl_autocast_and_an_unknown_one_is_refused(compose):
    module = defaults(compose)
    assert mapped(module, precision="bf16-mixed")["bf16"] is True
    assert mapped(module, precision="32-true")["bf16"] is False
    assert mapped(module)["fp16"] is False
    with pytest.raises(UnmappableSetting, match="precision"):
        mapped(module, precision="16-mixed")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("grpo.module.advantage.std_estimator=population", "advantage.std_estimator"),
        ("grpo.module.advantage.eps=1e-6", "advantage.eps"),
        ("grpo.module.kl.estimator=k1", "kl.estimator"),
        ("grpo.module.clip.dual_clip=3.0", "clip.dual_clip"),
        ("grpo.module.dynamic_sampling.enabled=true", "dynamic_sampling.enabled"),
        ("micro_batch_size=3", "micro_batch_size"),
        ("grpo=rloo", "advantage.estimator"),
        ("grpo.module.advantage.batch_renormalize=true", "advantage.batch_renormalize"),
        ("grpo=gdpo grpo.module.advantage.std_scope=batch", "advantage.std_scope=batch"),
        ("grpo=cispo grpo.module.clip.eps_low=0.2", "clip.eps_low=0.2"),
        ("grpo=cispo grpo.module.loss_aggregation=seq_mean_token_mean", "loss_aggregation"),
        ("grpo.module.entropy.coef=0.01", "entropy.coef"),
        ("grpo.module.entropy.top_quantile=0.2", "entropy.top_quantile"),
    ],
)
def test_a_convention_trl_cannot_run_is_refused_by_its_medrl_key(compose, override, key):
    with pytest.raises(UnmappableSetting, match=key):
        mapped(defaults(compose, *override.split()))


def test_gspo_maps_to_the_sequence_level_with_the_sequence_clip_range(compose):
    args = mapped(defaults(compose, "grpo=gspo"))
    assert args["importance_sampling_level"] == "sequence"
    assert (args["epsilon"], args["epsilon_high"]) == (3e-4, 4e-4)
    assert args["loss_type"] == "grpo"  # the per-sequence objective, as the paper's


def test_cispo_maps_to_trls_cispo_with_its_cap_as_epsilon_high(compose):
    args = mapped(defaults(compose, "grpo=cispo"))
    # medrl clips the weight to [1 - 1.0, 1 + 4.0]; TRL caps it at epsilon_high itself.
    assert (args["loss_type"], args["epsilon_high"]) == ("cispo", 5.0)


def test_gdpo_maps_to_normalize_then_sum_with_one_weight_per_component(compose):
    args = mapped(defaults(compose, "grpo=gdpo"), reward_weights=[1.0, 0.3])
    assert args["multi_objective_aggregation"] == "normalize_then_sum"
    assert args["reward_weights"] == [1.0, 0.3]
    assert mapped(defaults(compose))["multi_objective_aggregation"] == "sum_then_normalize"


def test_entropy_controls_map_with_one_micro_batch(compose):
    whole = ("grpo.module.micro_batch_size=16", "grpo.module.loss_aggregation=token_mean")
    args = mapped(defaults(compose, *whole, "grpo.module.entropy.coef=0.01"))
    assert (args["entropy_coef"], args["top_entropy_quantile"]) == (0.01, 1.0)
    args = mapped(defaults(compose, *whole, "grpo.module.entropy.top_quantile=0.2"))
    assert (args["entropy_coef"], args["top_entropy_quantile"]) == (0.0, 0.2)


def test_lora_maps_to_the_same_peft_fields_and_qlora_is_refused():
    adapter = LoraAdapter(r=16, alpha=32, dropout=0.05)
    assert lora_config_kwargs(adapter) == {
        "r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    assert lora_config_kwargs(FullFinetune()) is None
    with pytest.raises(UnmappableSetting, match="qlora"):
        lora_config_kwargs(QLoraAdapter())


def test_sft_maps_batch_length_schedule_and_completion_only_loss(compose):
    cfg = compose("bench")
    args = sft_config_kwargs(
        sft_kwargs(cfg),
        batch_size=4,
        max_seq_length=1024,
        grad_clip=1.0,
        steps=100,
        seed=42,
        device="cuda",
        gradient_checkpointing=False,
        output_dir="x",
    )
    assert args["per_device_train_batch_size"] == 4 and args["gradient_accumulation_steps"] == 1
    assert args["max_length"] == 1024 and args["completion_only_loss"] and not args["packing"]
    assert (args["lr_scheduler_type"], args["warmup_steps"]) == ("cosine", 3)
    assert args["learning_rate"] == cfg.sft.module.lr and args["use_cpu"] is False


def test_trl_accepts_the_kwargs_and_generates_once_per_optimizer_step(compose, tmp_path):
    pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[bench]')")
    from trl import GRPOConfig

    module = defaults(compose)
    config = GRPOConfig(**mapped(module, output_dir=str(tmp_path)))
    rows = module["prompts_per_step"] * module["group_size"]
    assert config.generation_batch_size == rows  # B*G completions per generation
    assert config.steps_per_generation == config.gradient_accumulation_steps  # one per step
    assert dataclasses.is_dataclass(config) and config.loss_type == "grpo"


@pytest.mark.parametrize("preset", ["gspo", "cispo"])
def test_trl_accepts_the_mapped_presets(compose, tmp_path, preset):
    pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[bench]')")
    from trl import GRPOConfig

    config = GRPOConfig(**mapped(defaults(compose, f"grpo={preset}"), output_dir=str(tmp_path)))
    assert config.importance_sampling_level == ("sequence" if preset == "gspo" else "token")


def test_trl_gets_one_reward_function_per_medrl_component_with_its_weight_apart():
    from medrl.bench.trl_side import medrl_reward_functions
    from medrl.data.records import QARecord
    from medrl.prompts import LetterFormat
    from medrl.rewards import build_reward_set

    rewards = build_reward_set({"correctness": {"weight": 1.0}, "format": {"weight": 0.3}})
    record = QARecord(id="q", question="Q?", options={"A": "a", "B": "b"}, answer="B")
    functions = medrl_reward_functions([record], rewards, LetterFormat())
    assert [f.__name__ for f in functions] == ["medrl_correctness", "medrl_format"]
    batch = dict(prompts=["p", "p"], completions=["B", "A is it"], completion_ids=[[1], [2, 3]])
    scores = [f(**batch, record_index=[0, 0]) for f in functions]
    # Unweighted components: TRL applies reward_weights (1.0, 0.3) itself.
    assert scores == [[1.0, 0.0], [1.0, 0.0]]
