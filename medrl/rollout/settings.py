"""How rollouts are sampled (the distribution) and how they are produced (the engine).

SamplingSettings changes the numbers; EngineSettings only changes speed and memory: every
engine path samples from the same distribution and computes the same log-probs as the
straightforward one (tests/rollout); medrl's sampler uses its own random stream, so a seed draws
other samples than transformers' generate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medrl.utils.config import config_values, defaults_from_config
from medrl.utils.settings import (
    Problem,
    SettingsBlock,
    bool_rule,
    choice_rule,
    count_rule,
    is_bool,
    is_count,
    is_number,
    positive,
)

SAMPLERS = ("medrl", "hf")
CPU_LINEARS = ("auto", "onednn", "torch")
DECODES = ("dynamic", "static", "compiled")
# The fields greedy decoding ignores (it takes the argmax).
SAMPLING_ONLY = ("temperature", "top_p", "top_k", "min_p")


@dataclass(frozen=True)
@defaults_from_config("grpo/standard", "module.sampling")
class SamplingSettings(SettingsBlock):
    """How completions are decoded.

    greedy=True decodes with argmax (``do_sample=False``); temperature, top_p, top_k and min_p
    are then ignored. Otherwise tokens are sampled from the softmax of logits / temperature,
    restricted by top_k (0 = off), top_p (1.0 = off) and min_p (0.0 = off).

    top_k is explicit because transformers otherwise fills it from the model's
    generation_config or its global default (50), silently truncating the distribution. GRPO's
    importance ratios assume samples come from the distribution `completion_logprobs` scores,
    i.e. top_k=0, top_p=1, min_p=0 and the same temperature.
    """

    # A block of grpo.module and of evaluation: its users prefix the key where they report it.
    BLOCK = "sampling"
    RULES = (
        ("max_new_tokens", *count_rule(1, "tokens generated per completion")),
        ("greedy", *bool_rule()),
        ("temperature", positive, "must be a number > 0 when sampling (greedy=false)"),
        ("top_p", lambda v: is_number(v) and 0 < v <= 1, "must be in (0, 1] (1 = off)"),
        ("min_p", lambda v: is_number(v) and 0 <= v < 1, "must be in [0, 1) (0 = off)"),
        ("top_k", *count_rule(0, "0 = off")),
    )

    # Defaults: conf/grpo/standard.yaml's grpo.module.sampling (evaluation's differ: greedy).
    temperature: float
    top_p: float
    min_p: float
    max_new_tokens: int
    greedy: bool
    top_k: int

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[Problem]:
        problems = super().check(values)
        if {**cls.defaults(), **values}.get("greedy") is True:  # argmax: the knobs are unread
            problems = [p for p in problems if p.key not in SAMPLING_ONLY]
        return problems


@dataclass(frozen=True)
@defaults_from_config("engine/default")
class EngineSettings(SettingsBlock):
    """How rollouts are produced and their log-probs computed; none of these changes the math.

    medrl.rollout.engine resolves them for a device: the CPU pieces (cpu_linear,
    decode_attention, lean_activations, kernel_cache_capacity, release_heap, keep_cast_weights,
    release_cast_sources) run on a CPU only;
    on a GPU the engine is transformers' own path plus the device-independent pieces.

    sampler:       "medrl" (medrl.rollout.decoding: each prompt prefilled once and its KV cache
                   shared by its samples, finished rows leave the batch) or "hf" (transformers'
                   generate: every sample prefills its own prompt copy, rows decode to the end).
    merge_adapter: sample through LoRA weights merged into the base (W + s*B@A, one matmul per
                   layer instead of three); the exact original weights are restored afterwards.
                   Ignored where merging is not exact (QLoRA's 4-bit base, DoRA, non-Linear).
    shared_prompt_logprobs: log-prob passes run each distinct prompt of a micro-batch once and
                   share its KV cache (with gradients) across the completions that follow it.
    pack_completions: with shared_prompt_logprobs, a micro-batch's log-prob pass is one packed
                   row without padding (medrl.rollout.logprobs: each prompt once, then every
                   completion at its own length under a tree-shaped attention mask), where the
                   model's attention takes such a mask (sdpa or eager, no sliding windows).
    cpu_linear:    float32 Linear layers on a CPU, while sampling and in the log-prob passes
                   (forward and backward): "onednn" runs them through oneDNN's matmul
                   (medrl.rollout.onednn_linear; about twice MKL's rate on an AMD EPYC, slower
                   than MKL on an Intel Xeon with AMX), "torch" leaves them to F.linear (MKL),
                   "auto" times both on the run's own weights and row counts and takes the
                   faster, per phase and weight shape (medrl.rollout.kernel_choice; logged, and
                   stored per CPU kind so later runs and resumed ones take the same kernels:
                   medrl.rollout.decision_store).
    prepack_sampling_weights: on a CPU, the Linears sampling routes to oneDNN read a copy of
                   their weight in oneDNN's blocked layout, made once per rollout
                   (medrl.rollout.onednn_linear.prepacked_weight): oneDNN otherwise repacks the
                   weight inside every product, a large part of a 16-row decode product. Costs
                   the routed weights' bytes again while sampling.
    decode:        medrl's sampler's decode steps: "dynamic" (finished rows leave the batch, the
                   cache grows: new shapes every token), "static" (every row every step, a
                   fixed-capacity cache and mask: one shape per rollout,
                   medrl.rollout.static_decode) or "compiled" (static, the step compiled once
                   per shape with torch.compile). Same draws, same distribution.
    fused_head:    with pack_completions, where the logits are a plain Linear of the hidden
                   states, log-probs come from the hidden states chunk by chunk and the
                   backward recomputes each chunk's logits (medrl.rollout.fused_head): no
                   [K, V] logits are kept for the backward.
    decode_attention: on a CPU, half-precision one-token decode steps run medrl's attention
                   (medrl.rollout.decode_attention: two batched matmuls instead of sdpa's CPU
                   kernel); float32 and every other call stay on sdpa. "auto" times both on
                   the run's rows, heads and dtype (stored as cpu_linear's) and takes the faster
                   (logged): on an AMD EPYC Zen 3, without AVX-512 bfloat16, medrl's was about
                   5x slower than sdpa, while it was faster on the Zen 5.
    kernel_cache_capacity: on a CPU, entries of oneDNN's and ideep's per-shape kernel caches
                   (medrl.rollout.onednn_linear.bound_kernel_caches; null = their default of
                   1,024, which grows by ~35 MB per GRPO step under packing).
    lean_activations: the reference and update passes keep fewer activations for the backward
                   (medrl.rollout.lean_passes): grouped key/value heads go to PyTorch's
                   attention unrepeated, SiLU-gated MLPs keep two tensors instead of three.
    keep_cast_weights: on a CPU under autocast (bf16-mixed), frozen Linear weights are cast to
                   bfloat16 once per run and the copies kept (medrl.rollout.merged_adapter
                   .CastCopies), instead of once per sampling or log-prob phase; cast again if
                   a weight changes in place or is re-pointed. With release_cast_sources, only
                   the copies of weights mapped from the checkpoint file are kept. Same numbers.
    release_cast_sources: with keep_cast_weights, the float32 originals, which autocast never
                   reads once their copy exists, give their resident pages back to the OS where
                   they are mapped from the checkpoint file (medrl.utils.pages: madvise; the
                   values stay, read again from the file where used, i.e. merging LoRA for
                   sampling). Weights held in memory rather than mapped are left alone.
    release_heap:  before each micro-batch of the update, hand the CPU heap's free pages back
                   to the OS (glibc malloc_trim; medrl.utils.heap), so peak resident memory is
                   what the micro-batch needs rather than what fragmentation left behind. Off
                   by default: measured on this CPU it cut the bench's peak by about 0.12 GiB
                   and cost about 1.3 s per update (the pages are faulted in again).
    """

    BLOCK = "engine"  # the top-level config group conf/engine/
    RULES = (
        ("sampler", *choice_rule(SAMPLERS)),
        ("cpu_linear", *choice_rule(CPU_LINEARS)),
        ("decode", *choice_rule(DECODES)),
        (
            "decode_attention",
            lambda v: v == "auto" or is_bool(v),
            'must be "auto", true or false',
        ),
        (
            "kernel_cache_capacity",
            lambda v: v is None or is_count(v, 1),
            "must be an integer >= 1, or null for oneDNN's default",
        ),
        *(
            (name, *bool_rule())
            for name in (
                "merge_adapter",
                "shared_prompt_logprobs",
                "pack_completions",
                "fused_head",
                "lean_activations",
                "release_heap",
                "prepack_sampling_weights",
                "keep_cast_weights",
                "release_cast_sources",
            )
        ),
    )

    # Defaults: conf/engine/default.yaml (engine=default), written once there.
    sampler: str
    merge_adapter: bool
    shared_prompt_logprobs: bool
    pack_completions: bool
    cpu_linear: str
    decode: str
    fused_head: bool
    lean_activations: bool
    release_heap: bool
    prepack_sampling_weights: bool
    keep_cast_weights: bool
    release_cast_sources: bool
    decode_attention: bool | str
    kernel_cache_capacity: int | None


# The straightforward path: transformers' generate through peft's unmerged layers, every row's
# prompt in every log-prob pass, no CPU piece. generate() uses it unless given an engine; its
# one definition is conf/engine/straightforward.yaml (engine=straightforward).
STRAIGHTFORWARD = EngineSettings(**config_values("engine/straightforward"))
