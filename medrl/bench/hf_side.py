"""The rollout baseline: plain `model.generate` on the same policy, prompts and sampling.

It tokenizes the prompts with the tokenizer's own padding and calls generate once per step,
nothing else, so the ratio against medrl.rollout.generate is the cost of medrl's wrapping
(encoding, eos handling, masks, decoding).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate

from medrl.bench.common import model_spec, precision_autocast
from medrl.bench.environment import rss_bytes
from medrl.bench.instrument import (
    PhaseClock,
    causal_lm,
    decode_flops_per_row,
    decode_weight_bytes,
    time_generation,
)
from medrl.bench.settings import BenchTask, grpo_kwargs
from medrl.models import load_policy
from medrl.rollout import eos_token_ids, generation_kwargs


def run_rollout(task: BenchTask, cfg: Any, clock: PhaseClock) -> dict[str, Any]:
    """`task.total_steps` plain generate calls: B prompts, G sampled completions each."""
    policy = load_policy(model_spec(cfg), instantiate(cfg.adapter))
    model, tokenizer = policy.model.to(cfg.device), policy.tokenizer
    loaded_rss = rss_bytes()
    settings = grpo_kwargs(cfg)
    eos = eos_token_ids(model, tokenizer)
    time_generation(clock, model, causal_lm(model), eos)
    model.eval()
    for _ in range(task.total_steps):
        clock.begin_step()
        inputs = tokenizer(
            list(task.prompts), return_tensors="pt", padding=True, padding_side="left"
        ).to(cfg.device)
        with torch.no_grad(), precision_autocast(cfg):
            model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                num_return_sequences=settings["group_size"],
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
                **generation_kwargs(settings["sampling"]),
            )
        clock.end_step({"threads": float(torch.get_num_threads())})
    return {
        "rss_after_load_bytes": loaded_rss,
        "decode_weight_bytes": decode_weight_bytes(model, str(cfg.precision)),
        "decode_flops_per_row": decode_flops_per_row(model),
    }


RUNNERS = {"rollout": run_rollout}
