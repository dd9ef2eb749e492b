"""medrl's side: the GRPO step (GRPOModule under a Lightning Trainer, as the grpo stage runs
it), the SFT step (SFTModule) and rollouts (medrl.rollout.generate)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from medrl.bench.common import (
    check_same_prompts,
    model_spec,
    precision_autocast,
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
    time_generation,
    time_optimizer_steps,
)
from medrl.bench.settings import BenchTask, grpo_kwargs
from medrl.models import load_policy
from medrl.rollout import RolloutEngine, eos_token_ids, generate

# GRPOModule's own time/* metrics -> the clock's phases (see instrument.PHASES). The module
# times its phases itself because medrl's sampler never calls model.generate, which is what
# the outside wrappers time; reward (TimedRewardSet) and optimizer (torch's step hooks) are
# still timed from outside, the same way as for TRL.
GRPO_REPORTED_PHASES = {
    "time/generate": "generate",
    "time/prefill": "prefill",
    "time/reference": "ref_logprobs",
    "time/old_logprobs": "ref_logprobs",
    "time/policy_forward": "policy_forward",
    "time/policy_backward": "policy_backward",
}

REPORTED_COUNTERS = {
    "completion_tokens": "rollout/completion_tokens",
    "rows": "rollout/completions",
    "decode_width": "rollout/completion_len_max",
}


class LightningStepTimer(pl.Callback):
    """One clock step per training batch (a GRPO rollout step, an SFT optimizer step), with
    the module's own time/* metrics of that step kept beside the clock's phases; `phases` maps
    reported metrics onto clock phases."""

    def __init__(self, clock: PhaseClock, phases: dict[str, str] | None = None) -> None:
        self.clock = clock
        self.phases = phases or {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.begin_step()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        reported = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("time/")
        }
        for metric, phase in self.phases.items():
            if metric in reported:
                self.clock.add(phase, reported[metric])
        if "time/generate" in self.phases:  # no generate wrapper counts: the module's figures
            for counter, metric in REPORTED_COUNTERS.items():
                if metric in trainer.callback_metrics:
                    self.clock.count(counter, float(trainer.callback_metrics[metric]))
        reported["threads"] = float(torch.get_num_threads())
        self.clock.end_step(reported)


def _trainer(
    cfg: Any,
    clock: PhaseClock,
    max_steps: int,
    phases: dict[str, str] | None = None,
    **kwargs: Any,
) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="gpu" if cfg.device == "cuda" else "cpu",
        devices=1,
        precision=str(cfg.precision),  # 32-true | bf16-mixed (TRL: bf16=False | True)
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[LightningStepTimer(clock, phases)],
        **kwargs,
    )


def run_grpo(task: BenchTask, cfg: Any, clock: PhaseClock) -> dict[str, Any]:
    """`task.total_steps` GRPO rollout steps on the task's records, each one clock step."""
    from medrl.algorithms.grpo import GRPOModule

    policy = load_policy(model_spec(cfg), instantiate(cfg.adapter))
    loaded_rss = rss_bytes()
    output_format = instantiate(cfg.format)
    records = task.qa_records()
    check_same_prompts(
        task.prompts,
        render_prompts(policy.tokenizer, records, output_format, policy.chat_template_kwargs),
        "medrl",
    )
    # Everything GRPOModule takes from conf/grpo; the stage runner's arguments are given below.
    settings = {k: v for k, v in grpo_kwargs(cfg).items() if k != "chat_template_kwargs"}
    settings["samples_file"] = None
    module = GRPOModule(
        model=policy.model,
        tokenizer=policy.tokenizer,
        prompts=records,
        rewards=timed_rewards(cfg, clock),
        output_format=output_format,
        chat_template_kwargs=policy.chat_template_kwargs,
        **settings,
    )
    phases = dict(GRPO_REPORTED_PHASES) if cfg.breakdown else {}
    if cfg.breakdown and module.engine_settings.sampler == "hf":
        # transformers' generate: its prefill is the first forward, timed from outside.
        phases.pop("time/prefill")
        eos = eos_token_ids(policy.model, policy.tokenizer)
        time_generation(clock, policy.model, causal_lm(policy.model), eos)
        phases.pop("time/generate")
    trainer = _trainer(
        cfg, clock, max_steps=task.total_steps * module.mu, phases=phases, max_epochs=1
    )
    with time_optimizer_steps(clock):
        trainer.fit(module, DataLoader(range(task.total_steps), batch_size=1))
    return {
        "rss_after_load_bytes": loaded_rss,
        "conventions": module.conventions(),
        "decode_weight_bytes": decode_weight_bytes(policy.model, str(cfg.precision)),
        "decode_flops_per_row": decode_flops_per_row(policy.model),
        "engine_decisions": module.engine.decisions(),
    }


def run_sft(task: BenchTask, cfg: Any, clock: PhaseClock) -> dict[str, Any]:
    """`task.total_steps` SFT optimizer steps, each on the same batch of the task's records."""
    from medrl.algorithms.sft import SFTModule
    from medrl.algorithms.sft_batches import SFTCollator

    policy = load_policy(model_spec(cfg), instantiate(cfg.adapter))
    loaded_rss = rss_bytes()
    examples = sft_examples(task.qa_records(), cfg, policy.tokenizer, policy.chat_template_kwargs)
    loader = DataLoader(
        examples,
        batch_size=len(examples),
        collate_fn=SFTCollator(pad_token_id=policy.tokenizer.pad_token_id),
    )
    module = instantiate(cfg.sft.module)(model=policy.model)
    assert isinstance(module, SFTModule)
    trainer = _trainer(
        cfg,
        clock,
        max_steps=task.total_steps,
        max_epochs=-1,
        gradient_clip_val=float(cfg.sft.grad_clip),
        limit_val_batches=0,
    )
    with time_optimizer_steps(clock):
        trainer.fit(module, loader)
    tokens = [sum(e.loss_mask) for e in examples]
    return {
        "rss_after_load_bytes": loaded_rss,
        "assistant_tokens_per_step": sum(tokens),
        "engine_decisions": module.engine.decisions(),
    }


def run_rollout(task: BenchTask, cfg: Any, clock: PhaseClock) -> dict[str, Any]:
    """`task.total_steps` calls of medrl.rollout.generate: B prompts x G samples each, with
    the engine and compute precision GRPO samples with. medrl's sampler never calls
    model.generate (which the other side's clock wraps): the phases and counters come from
    generate's own timings and the rollout it returns."""
    policy = load_policy(model_spec(cfg), instantiate(cfg.adapter))
    policy.model.to(cfg.device)
    loaded_rss = rss_bytes()
    settings = grpo_kwargs(cfg)
    # One engine for every call, as GRPOModule keeps one: its decisions and compiled decode
    # steps are made once, not per call.
    engine = RolloutEngine.for_model(settings["engine"], policy.model)
    for _ in range(task.total_steps):
        clock.begin_step()
        timings: dict[str, float] = {}
        with precision_autocast(cfg), clock.phase("generate"):
            rollout = generate(
                policy.model,
                policy.tokenizer,
                task.prompts,
                settings["sampling"],
                num_samples=settings["group_size"],
                engine=engine,  # as GRPOModule samples
                timings=timings,
            )
        if "prefill" in timings:
            clock.add("prefill", timings["prefill"])
        clock.count("completion_tokens", float(sum(rollout.num_tokens)))
        clock.count("rows", float(len(rollout.texts)))
        clock.count("decode_width", float(rollout.completion_ids.shape[1]))
        clock.count("prompt_width", float(rollout.prompt_ids.shape[1]))
        clock.end_step({"threads": float(torch.get_num_threads())})
    return {
        "rss_after_load_bytes": loaded_rss,
        "decode_weight_bytes": decode_weight_bytes(policy.model, str(cfg.precision)),
        "decode_flops_per_row": decode_flops_per_row(policy.model),
        "engine_decisions": engine.decisions(),
    }


RUNNERS = {"grpo": run_grpo, "sft": run_sft, "rollout": run_rollout}
