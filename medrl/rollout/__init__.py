"""Rollouts: batched generation of completions and the token log-probs of completions.

engine (RolloutEngine: the one interface the algorithms use; picks its pieces by device) ->
generation (Rollout, sample_rollout) through decoding (medrl's shared-prompt sampler, on
kv_cache's in-place cache) or transformers' generate; logprobs (completion_logprobs: full,
shared-prompt or packed passes; fused_head takes the log-probs from the hidden states).
The engine's pieces: merged_adapter (LoRA merged while sampling, weights cast once under
autocast), and on a CPU onednn_linear (float32 Linears through oneDNN), decode_attention,
lean_passes (fewer activations kept for the backward) and medrl.utils.heap.
settings: SamplingSettings (what is sampled) and EngineSettings (how; speed only).
"""

from medrl.rollout.engine import (
    EnginePieces,
    RolloutEngine,
    UsesRolloutEngine,
    engine_pieces,
    generate,
)
from medrl.rollout.generation import (
    Rollout,
    completion_mask_from_eos,
    encode_prompts,
    eos_token_ids,
    eval_mode,
    generation_kwargs,
    left_pad,
    merge_rollouts,
)
from medrl.rollout.logprobs import completion_logprobs
from medrl.rollout.settings import STRAIGHTFORWARD, EngineSettings, SamplingSettings

__all__ = [
    "STRAIGHTFORWARD",
    "EnginePieces",
    "EngineSettings",
    "Rollout",
    "RolloutEngine",
    "SamplingSettings",
    "UsesRolloutEngine",
    "completion_logprobs",
    "completion_mask_from_eos",
    "encode_prompts",
    "eos_token_ids",
    "engine_pieces",
    "eval_mode",
    "generate",
    "generation_kwargs",
    "left_pad",
    "merge_rollouts",
]
