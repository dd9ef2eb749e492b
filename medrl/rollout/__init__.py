"""Rollouts: batched generation of completions and the token log-probs of completions."""

from medrl.rollout.generation import (
    Rollout,
    SamplingSettings,
    completion_logprobs,
    completion_mask_from_eos,
    encode_prompts,
    eos_token_ids,
    eval_mode,
    generate,
    generation_kwargs,
    left_pad,
    merge_rollouts,
)

__all__ = [
    "Rollout",
    "SamplingSettings",
    "completion_logprobs",
    "completion_mask_from_eos",
    "encode_prompts",
    "eos_token_ids",
    "eval_mode",
    "generate",
    "generation_kwargs",
    "left_pad",
    "merge_rollouts",
]
