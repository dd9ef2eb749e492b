"""medrl settings -> TRL GRPOConfig / SFTConfig / peft LoraConfig keyword arguments (pure).

The benchmark is only fair if both systems run the same algorithm, so every GRPO convention
medrl names is mapped to its TRL field, and a convention TRL cannot express raises
`UnmappableSetting` naming the medrl key instead of being silently approximated. Nothing here
imports trl, so the mapping is tested without it.

Conventions that map (medrl key -> TRL field):
    prompts_per_step x group_size      -> generation batch = per_device_train_batch_size *
                                          gradient_accumulation_steps (one generation per step)
    group_size                         -> num_generations
    micro_batch_size                   -> per_device_train_batch_size (completions per
                                          forward/backward); gradient_accumulation_steps =
                                          B*G / micro_batch_size
    mu                                 -> num_iterations
    sampling.max_new_tokens            -> max_completion_length
    sampling.temperature/top_p/top_k   -> temperature/top_p/top_k (0 = off in both)
    sampling.min_p (0 = off)           -> min_p (None = off)
    advantage.std_scope group|batch|none -> scale_rewards group|batch|none
    advantage.aggregation              -> multi_objective_aggregation (normalize_then_sum only
                                          as TRL computes it: group std unbiased + 1e-4 per
                                          component, then the batch renormalization), with one
                                          TRL reward function per medrl reward component and
                                          reward_weights = the components' weights
    importance_sampling token|sequence -> importance_sampling_level token|sequence
    clip.eps_low, clip.eps_high        -> epsilon, epsilon_high (sequence_clip's at the
                                          sequence level)
    policy_loss cispo                  -> loss_type cispo (TRL: token-mean normalizer, no lower
                                          bound, weight capped at epsilon_high = 1 + eps_high)
    entropy.coef                       -> entropy_coef (TRL: a token mean per micro-batch, so
                                          only with one micro-batch and token_mean)
    entropy.top_quantile               -> top_entropy_quantile (TRL: the quantile of each
                                          micro-batch under the current policy, so only with
                                          one micro-batch and mu = 1)
    kl.beta                            -> beta; KL k3 in the loss, not multiplied by the ratio
                                          (use_bias_correction_kl=False)
    loss_aggregation                   -> loss_type: seq_mean_token_mean = grpo,
                                          token_mean = dapo, seq_mean_token_sum_norm = dr_grpo
    mask_truncated                     -> mask_truncated_completions
    lr, weight_decay, grad_clip        -> learning_rate, weight_decay, max_grad_norm
    scheduler (+ warmup_ratio)         -> lr_scheduler_type (+ warmup_steps, as medrl rounds it)
    every pass with dropout off        -> disable_dropout=True
    torch AdamW                        -> optim=adamw_torch (TRL's default is the fused AdamW)
    model.gradient_checkpointing       -> gradient_checkpointing (TRL's default is True)
    precision 32-true / bf16-mixed     -> bf16=False / True, fp16=False (TRL's default is bf16=True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# medrl loss_aggregation -> TRL loss_type (same normalizers; see the module docstring).
LOSS_TYPES = {
    "seq_mean_token_mean": "grpo",
    "token_mean": "dapo",
    "seq_mean_token_sum_norm": "dr_grpo",
}
# medrl scheduler -> transformers lr_scheduler_type (medrl.algorithms.optim.SCHEDULERS).
SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
# TRL adds this constant to the std it divides the centred rewards by.
TRL_ADVANTAGE_EPS = 1e-4


class UnmappableSetting(ValueError):
    """A medrl setting TRL cannot express; the message names the key and the way out."""


PRECISIONS = ("32-true", "bf16-mixed")


def _quiet_trainer_kwargs(
    output_dir: str, device: str, gradient_checkpointing: bool, precision: str
) -> dict[str, Any]:
    """The Trainer fields both TRL trainers get: no logging, saving or progress bar; autocast
    to bfloat16 only with precision bf16-mixed (medrl's Lightning precision of the same name)."""
    if precision not in PRECISIONS:
        raise UnmappableSetting(f"precision={precision!r}; valid: {list(PRECISIONS)}")
    return {
        "output_dir": output_dir,
        "use_cpu": device == "cpu",
        "bf16": precision == "bf16-mixed",
        "fp16": False,
        "gradient_checkpointing": gradient_checkpointing,
        "optim": "adamw_torch",
        "report_to": "none",
        "logging_strategy": "no",
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def grpo_problems(module: Mapping[str, Any]) -> list[str]:
    """Every medrl GRPO setting in `module` (GRPOModule's keyword arguments) TRL cannot run."""
    adv, kl, clip = module["advantage"], module["kl"], module["clip"]
    problems = []
    if adv.std_scope != "none" and adv.std_estimator != "unbiased":
        problems.append(
            f"grpo.module.advantage.std_estimator={adv.std_estimator}: TRL divides by the "
            "unbiased (Bessel) std only; set it to unbiased"
        )
    if adv.std_scope != "none" and adv.eps != TRL_ADVANTAGE_EPS:
        problems.append(
            f"grpo.module.advantage.eps={adv.eps}: TRL adds {TRL_ADVANTAGE_EPS} to the std"
        )
    if adv.estimator != "group_mean":
        problems.append(
            f"grpo.module.advantage.estimator={adv.estimator}: TRL's GRPOTrainer has no "
            "leave-one-out baseline (its RLOOTrainer is another trainer)"
        )
    problems += _aggregation_problems(adv)
    problems += _policy_loss_problems(module)
    problems += _entropy_problems(module)
    if kl.beta > 0 and kl.estimator != "k3":
        problems.append(f"grpo.module.kl.estimator={kl.estimator}: TRL's KL term is k3")
    if clip.dual_clip is not None:
        problems.append(
            "grpo.module.clip.dual_clip: TRL has no dual clip (its `delta` is a different bound)"
        )
    if module["dynamic_sampling"].enabled:
        problems.append("grpo.module.dynamic_sampling.enabled: TRL has no dynamic sampling")
    if module["sampling"].greedy:
        problems.append("grpo.module.sampling.greedy: GRPO samples its completions")
    if module["loss_aggregation"] not in LOSS_TYPES:
        problems.append(f"grpo.module.loss_aggregation={module['loss_aggregation']}: unknown")
    if module["scheduler"] not in SCHEDULERS:
        problems.append(f"grpo.module.scheduler={module['scheduler']}: unknown")
    rows, micro = module["prompts_per_step"] * module["group_size"], module["micro_batch_size"]
    if rows % micro:
        problems.append(
            f"grpo.module.micro_batch_size={micro} must divide B*G={rows}: TRL splits the "
            "generation batch into equal micro-batches"
        )
    return problems


def _aggregation_problems(adv: Any) -> list[str]:
    """TRL's normalize_then_sum is one fixed recipe; sum_then_normalize has no renormalization."""
    if adv.aggregation == "sum_then_normalize":
        if adv.batch_renormalize:
            return [
                "grpo.module.advantage.batch_renormalize=true: TRL renormalizes over the batch "
                "only with advantage.aggregation=normalize_then_sum"
            ]
        return []
    fixed = {
        "std_scope": "group",
        "std_estimator": "unbiased",
        "eps": TRL_ADVANTAGE_EPS,
        "batch_renormalize": True,
    }
    return [
        f"grpo.module.advantage.{key}={getattr(adv, key)}: TRL's normalize_then_sum uses "
        f"{key}={value}"
        for key, value in fixed.items()
        if getattr(adv, key) != value
    ]


def _policy_loss_problems(module: Mapping[str, Any]) -> list[str]:
    """TRL's cispo loss type fixes the normalizer and has no lower bound on the weight."""
    if module["policy_loss"] != "cispo":
        return []
    problems = []
    if module["loss_aggregation"] != "token_mean":
        problems.append(
            f"grpo.module.loss_aggregation={module['loss_aggregation']}: TRL's cispo loss "
            "divides by the batch's tokens (token_mean)"
        )
    eps_low = _clip(module).eps_low
    if eps_low < 1:
        level = "sequence_clip" if module["importance_sampling"] == "sequence" else "clip"
        problems.append(
            f"grpo.module.{level}.eps_low={eps_low}: TRL's cispo weight has no lower bound "
            "(set eps_low=1.0)"
        )
    return problems


def _entropy_problems(module: Mapping[str, Any]) -> list[str]:
    """TRL computes its entropy terms per micro-batch; medrl's are over the whole rollout."""
    entropy = module["entropy"]
    single = module["micro_batch_size"] >= module["prompts_per_step"] * module["group_size"]
    problems = []
    if entropy.coef > 0 and not (single and module["loss_aggregation"] == "token_mean"):
        problems.append(
            f"grpo.module.entropy.coef={entropy.coef}: TRL's bonus is a token mean per "
            "micro-batch; it matches medrl's only with one micro-batch (micro_batch_size >= "
            "B*G) and loss_aggregation=token_mean"
        )
    if entropy.coef > 0 and entropy.top_quantile is not None:
        problems.append(
            "grpo.module.entropy.coef with entropy.top_quantile: TRL restricts its bonus to the "
            "high-entropy tokens, medrl's counts every token"
        )
    if entropy.top_quantile is not None and not (single and module["mu"] == 1):
        problems.append(
            f"grpo.module.entropy.top_quantile={entropy.top_quantile}: TRL takes the quantile "
            "per micro-batch under the current policy; it matches medrl's (whole rollout, "
            "sampling policy) only with one micro-batch and mu = 1"
        )
    return problems


def _clip(module: Mapping[str, Any]) -> Any:
    """The clip settings of the importance-sampling level in use."""
    return (
        module["sequence_clip"] if module["importance_sampling"] == "sequence" else module["clip"]
    )


def _loss_type(module: Mapping[str, Any]) -> str:
    if module["policy_loss"] == "cispo":
        return "cispo"
    return LOSS_TYPES[module["loss_aggregation"]]


def grpo_config_kwargs(
    module: Mapping[str, Any],
    *,
    rollout_steps: int,
    device: str,
    gradient_checkpointing: bool,
    output_dir: str,
    precision: str = "32-true",
    reward_weights: Sequence[float] = (1.0,),
) -> dict[str, Any]:
    """GRPOConfig keyword arguments that run medrl's `module` settings for `rollout_steps`.

    reward_weights: the reward set's component weights, one TRL reward function per component
    (in the same order).

    `module` holds GRPOModule's keyword arguments (conf/grpo/ plus the seed), with the
    settings dataclasses (SamplingSettings, AdvantageSettings, ...) already built.
    One TRL optimizer step is one medrl update pass: B prompts x G completions, generated once
    per rollout step (steps_per_generation = gradient_accumulation_steps), accumulated over
    micro-batches of `micro_batch_size` completions.
    """
    problems = grpo_problems(module)
    if problems:
        raise UnmappableSetting("TRL cannot run these medrl settings: " + "; ".join(problems))
    sampling, adv, kl, entropy = (module[k] for k in ("sampling", "advantage", "kl", "entropy"))
    clip = _clip(module)
    rows, micro = module["prompts_per_step"] * module["group_size"], module["micro_batch_size"]
    optimizer_steps = rollout_steps * module["mu"]
    return {
        **_quiet_trainer_kwargs(output_dir, device, gradient_checkpointing, precision),
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": rows // micro,
        "num_generations": module["group_size"],
        "num_iterations": module["mu"],
        "max_completion_length": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p if sampling.min_p > 0 else None,
        "scale_rewards": adv.std_scope,
        "multi_objective_aggregation": adv.aggregation,
        "reward_weights": [float(w) for w in reward_weights],
        "importance_sampling_level": module["importance_sampling"],
        "epsilon": clip.eps_low,
        # TRL caps the cispo weight at epsilon_high itself, the clip's ratio at 1 + it.
        "epsilon_high": 1 + clip.eps_high if module["policy_loss"] == "cispo" else clip.eps_high,
        "entropy_coef": entropy.coef,
        "top_entropy_quantile": 1.0 if entropy.top_quantile is None else entropy.top_quantile,
        "beta": kl.beta,
        "use_bias_correction_kl": False,
        "loss_type": _loss_type(module),
        "mask_truncated_completions": module["mask_truncated"],
        "learning_rate": module["lr"],
        "weight_decay": module["weight_decay"],
        "lr_scheduler_type": SCHEDULERS[module["scheduler"]],
        "warmup_steps": int(module["warmup_ratio"] * optimizer_steps),
        "max_grad_norm": module["grad_clip"],
        "max_steps": optimizer_steps,
        "seed": module["seed"],
        "disable_dropout": True,
        "log_completions": False,
        "remove_unused_columns": False,
    }


def sft_config_kwargs(
    module: Mapping[str, Any],
    *,
    batch_size: int,
    max_seq_length: int,
    grad_clip: float,
    steps: int,
    seed: int,
    device: str,
    gradient_checkpointing: bool,
    output_dir: str,
    precision: str = "32-true",
) -> dict[str, Any]:
    """SFTConfig keyword arguments matching medrl's SFT step (`module` = SFTModule's kwargs).

    The dataset is medrl's own tokenized examples (input_ids + completion_mask), so the loss
    covers exactly medrl's assistant tokens; one optimizer step per batch, no packing.
    """
    if module["scheduler"] not in SCHEDULERS:
        raise UnmappableSetting(f"sft.module.scheduler={module['scheduler']}: unknown")
    return {
        **_quiet_trainer_kwargs(output_dir, device, gradient_checkpointing, precision),
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": 1,
        "max_length": max_seq_length,
        "completion_only_loss": True,
        "packing": False,
        "padding_free": False,
        "learning_rate": module["lr"],
        "weight_decay": module["weight_decay"],
        "lr_scheduler_type": SCHEDULERS[module["scheduler"]],
        "warmup_steps": int(module["warmup_ratio"] * steps),
        "max_grad_norm": grad_clip,
        "max_steps": steps,
        "seed": seed,
    }


def lora_config_kwargs(adapter: Any) -> dict[str, Any] | None:
    """peft LoraConfig keyword arguments for medrl's adapter spec (None: full fine-tuning).

    The same fields medrl.models.apply_adapter passes, so both systems train the same adapter.
    """
    kind = getattr(adapter, "kind", None)
    if kind == "full":
        return None
    if kind != "lora":
        raise UnmappableSetting(
            f"adapter={kind}: the benchmark compares LoRA or full fine-tuning only; TRL's "
            "GRPOTrainer casts a quantized model's LoRA weights to bfloat16, so its adapters "
            "would not be medrl's float32 ones (run adapter=qlora with trl=false)"
        )
    return {
        "r": adapter.r,
        "lora_alpha": adapter.alpha,
        "lora_dropout": adapter.dropout,
        "target_modules": adapter.target_modules,
        "bias": adapter.bias,
        "task_type": "CAUSAL_LM",
    }
