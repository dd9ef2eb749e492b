"""Rollouts: batched generation of completions and the token log-probs of completions.

settings (what is sampled, how it is produced) -> generation (Rollout, generate) through
decoding (medrl's shared-prompt sampler, on kv_cache's in-place cache) or transformers'
generate, merged_adapter (LoRA merged while sampling) -> scoring (completion_logprobs, full or
shared-prompt forward, or packed; fused_head takes the log-probs from the hidden states,
lean_passes keeps fewer activations), onednn_linear (float32 Linears through oneDNN on a CPU).
"""

from medrl.rollout.generation import (
    Rollout,
    completion_mask_from_eos,
    encode_prompts,
    eos_token_ids,
    eval_mode,
    generate,
    generation_kwargs,
    left_pad,
    merge_rollouts,
)
from medrl.rollout.scoring import completion_logprobs
from medrl.rollout.settings import EngineSettings, SamplingSettings

__all__ = [
    "EngineSettings",
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
