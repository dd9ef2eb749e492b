"""TRL's side: GRPOTrainer and SFTTrainer with medrl's settings (medrl.bench.trl_settings).

The model is the same weights folder medrl loads (for the embedded default, medrl's safetensors
conversion of the GGUF file in the model cache), loaded with the same dtype; the LoRA adapter,
the prompts (the bench's rendered strings), the reward set and the SFT token ids are medrl's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from medrl.bench.common import (
    check_same_prompts,
    model_spec,
    render_prompts,
    sft_examples,
    timed_rewards,
)
from medrl.bench.environment import rss_bytes
from medrl.bench.instrument import (
    PhaseClock,
    causal_lm,
    decode_flops_per_row,
    decode_weight_bytes,
    time_calls,
    time_generation,
    time_logprob_passes,
    time_optimizer_steps,
)
from medrl.bench.settings import BenchTask, grpo_kwargs, sft_kwargs
from medrl.bench.trl_settings import grpo_config_kwargs, lora_config_kwargs, sft_config_kwargs
from medrl.models import load_tokenizer, materialize, resolve_dtype
from medrl.rewards import RewardSample
from medrl.rollout import encode_prompts


def load_model(cfg: Any) -> tuple[Any, Any, Any]:
    """(model, tokenizer, spec): the weights medrl's load_policy reads, without the adapter
    (TRL applies it from `peft_config`)."""
    from transformers import AutoModelForCausalLM

    spec = model_spec(cfg)
    source = materialize(spec)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(spec.dtype)}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model, load_tokenizer(spec, source), spec


def peft_config(cfg: Any) -> Any:
    from peft import LoraConfig

    kwargs = lora_config_kwargs(instantiate(cfg.adapter))
    return None if kwargs is None else LoraConfig(**kwargs)


def step_timer(clock: PhaseClock, every: int = 1) -> Any:
    """A TrainerCallback that makes `every` optimizer steps one clock step (mu passes of one
    rollout step, so a TRL step is a medrl step)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.optimizer_steps = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.optimizer_steps % every == 0:
                clock.begin_step()

        def on_step_end(self, args, state, control, **kwargs):
            self.optimizer_steps += 1
            if self.optimizer_steps % every == 0:
                clock.end_step({"threads": float(torch.get_num_threads())})

    return StepTimer()


def medrl_reward_functions(records: list, rewards: Any, output_format: Any) -> list:
    """medrl's reward set as TRL reward functions, one per component (unweighted; TRL weighs
    them with reward_weights, so GDPO's normalize_then_sum sees each component): the dataset's
    record_index column says which record a completion answers; the token count is TRL's
    completion ids (with eos, as medrl counts them). The set is scored once per batch."""
    cache: dict[str, Any] = {}

    def scores(completions, completion_ids, record_index) -> list:
        key = repr((completions, [list(ids) for ids in completion_ids], list(record_index)))
        if cache.get("key") != key:
            cache["key"] = key
            cache["scores"] = [
                rewards.score(text, RewardSample(records[i], output_format, len(ids)))
                for text, ids, i in zip(completions, completion_ids, record_index, strict=True)
            ]
        return cache["scores"]

    def component(name: str):
        def medrl_reward(prompts, completions, completion_ids, record_index, **kwargs) -> list:
            return [s.components[name] for s in scores(completions, completion_ids, record_index)]

        medrl_reward.__name__ = f"medrl_{name}"
        return medrl_reward

    return [component(name) for name in rewards.names]


def prompt_ids_match(tokenizer: Any, prompts: list[str]) -> bool:
    """Whether TRL's tokenization of the prompts (tokenizer(text=...)) gives medrl's ids."""
    trl_ids = [list(ids) for ids in tokenizer(text=list(prompts))["input_ids"]]
    return trl_ids == encode_prompts(tokenizer, prompts)


def run_grpo(task: BenchTask, cfg: Any, clock: PhaseClock) -> dict[str, Any]:
    """`task.total_steps` GRPO steps of TRL's GRPOTrainer on the bench's prompts."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer, spec = load_model(cfg)
    loaded_rss = rss_bytes()
    records, output_format = task.qa_records(), instantiate(cfg.format)
    rendered = render_prompts(tokenizer, records, output_format, spec.chat_template_kwargs)
    check_same_prompts(task.prompts, rendered, "trl")
    module = grpo_kwargs(cfg)
    rewards = timed_rewards(cfg, clock)
    trl_args = grpo_config_kwargs(
        module,
        rollout_steps=task.total_steps,
        device=cfg.device,
        gradient_checkpointing=spec.gradient_checkpointing,
        precision=str(cfg.precision),
        output_dir=str(Path(task.extra["scratch_dir"])),
        reward_weights=[component.weight for component in rewards.components],
    )
    dataset = Dataset.from_list(
        [{"prompt": p, "record_index": i} for i, p in enumerate(task.prompts)]
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=medrl_reward_functions(records, rewards, output_format),
        args=GRPOConfig(**trl_args),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
        callbacks=[step_timer(clock, every=module["mu"])],
    )
    if cfg.breakdown:
        time_generation(clock, trainer.model, causal_lm(trainer.model), trainer.eos_token_ids)
        time_logprob_passes(clock, trainer, "_get_per_token_logps_and_entropies")
        time_calls(clock, trainer.accelerator, "backward", "policy_backward")
    with time_optimizer_steps(clock):
        trainer.train()
    return {
        "rss_after_load_bytes": loaded_rss,
        "trl_args": trl_args,
        "prompt_ids_match": prompt_ids_match(tokenizer, task.prompts),
        "decode_weight_bytes": decode_weight_bytes(trainer.model, str(cfg.precision)),
        "decode_flops_per_row": decode_flops_per_row(trainer.model),
    }


def run_sft(task: BenchTask, cfg: Any, clock: PhaseClock) -> dict[str, Any]:
    """`task.total_steps` SFT steps of TRL's SFTTrainer on medrl's tokenized examples."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, spec = load_model(cfg)
    loaded_rss = rss_bytes()
    examples = sft_examples(task.qa_records(), cfg, tokenizer, spec.chat_template_kwargs)
    dataset = Dataset.from_list(
        [{"input_ids": e.input_ids, "completion_mask": e.loss_mask} for e in examples]
    )
    trl_args = sft_config_kwargs(
        sft_kwargs(cfg),
        batch_size=len(examples),
        max_seq_length=int(cfg.sft.max_seq_length),
        grad_clip=float(cfg.sft.grad_clip),
        steps=task.total_steps,
        seed=int(cfg.seed),
        device=cfg.device,
        gradient_checkpointing=spec.gradient_checkpointing,
        precision=str(cfg.precision),
        output_dir=str(Path(task.extra["scratch_dir"])),
    )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**trl_args),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
        callbacks=[step_timer(clock)],
    )
    with time_optimizer_steps(clock):
        trainer.train()
    return {
        "rss_after_load_bytes": loaded_rss,
        "trl_args": trl_args,
        "assistant_tokens_per_step": sum(sum(e.loss_mask) for e in examples),
    }


RUNNERS = {"grpo": run_grpo, "sft": run_sft}
