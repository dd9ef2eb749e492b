"""How rollouts are sampled (the distribution) and how they are produced (the engine).

SamplingSettings changes the numbers; EngineSettings only changes speed and memory: every
engine path samples from the same distribution and computes the same log-probs as the
straightforward one (tests/rollout); medrl's sampler uses its own random stream, so a seed draws
other samples than transformers' generate.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("medrl", "hf")
CPU_LINEARS = ("onednn", "torch")


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are decoded.

    greedy=True decodes with argmax (``do_sample=False``); temperature, top_p, top_k and min_p
    are then ignored. Otherwise tokens are sampled from the softmax of logits / temperature,
    restricted by top_k (0 = off), top_p (1.0 = off) and min_p (0.0 = off).

    top_k is explicit because transformers otherwise fills it from the model's
    generation_config or its global default (50), silently truncating the distribution. GRPO's
    importance ratios assume samples come from the distribution `completion_logprobs` scores,
    i.e. top_k=0, top_p=1, min_p=0 and the same temperature.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    max_new_tokens: int = 256
    greedy: bool = False
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.greedy:
            return
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")


@dataclass(frozen=True)
class EngineSettings:
    """How rollouts are produced and their log-probs computed; none of these changes the math.

    medrl.rollout.engine resolves them for a device: the CPU pieces (cpu_linear,
    decode_attention, lean_activations, kernel_cache_capacity, release_heap) run on a CPU only;
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
                   (medrl.rollout.onednn_linear; about twice MKL's rate on the AMD CPU this
                   project is measured on), "torch" leaves them to F.linear (MKL).
    fused_head:    with pack_completions, where the logits are a plain Linear of the hidden
                   states, log-probs come from the hidden states chunk by chunk and the
                   backward recomputes each chunk's logits (medrl.rollout.fused_head): no
                   [K, V] logits are kept for the backward.
    decode_attention: on a CPU, half-precision one-token decode steps run medrl's attention
                   (medrl.rollout.decode_attention: two batched matmuls instead of sdpa's CPU
                   kernel); float32 and every other call stay on sdpa.
    kernel_cache_capacity: on a CPU, entries of oneDNN's and ideep's per-shape kernel caches
                   (medrl.rollout.onednn_linear.bound_kernel_caches; null = their default of
                   1,024, which grows by ~35 MB per GRPO step under packing).
    lean_activations: the reference and update passes keep fewer activations for the backward
                   (medrl.rollout.lean_passes): grouped key/value heads go to PyTorch's
                   attention unrepeated, SiLU-gated MLPs keep two tensors instead of three.
    release_heap:  before each micro-batch of the update, hand the CPU heap's free pages back
                   to the OS (glibc malloc_trim; medrl.utils.heap), so peak resident memory is
                   what the micro-batch needs rather than what fragmentation left behind. Off
                   by default: measured on this CPU it cut the bench's peak by about 0.12 GiB
                   and cost about 1.3 s per update (the pages are faulted in again).
    """

    sampler: str = "medrl"
    merge_adapter: bool = True
    shared_prompt_logprobs: bool = True
    pack_completions: bool = True
    cpu_linear: str = "onednn"
    fused_head: bool = True
    lean_activations: bool = True
    release_heap: bool = False
    decode_attention: bool = True
    kernel_cache_capacity: int | None = 64

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"sampler={self.sampler!r} is not valid; choose one of {list(SAMPLERS)}"
            )
        if self.cpu_linear not in CPU_LINEARS:
            raise ValueError(
                f"cpu_linear={self.cpu_linear!r} is not valid; choose one of {list(CPU_LINEARS)}"
            )
        capacity = self.kernel_cache_capacity
        if capacity is not None and (isinstance(capacity, bool) or capacity < 1):
            raise ValueError(
                f"kernel_cache_capacity={capacity!r} is not valid; an integer >= 1, or null for "
                "oneDNN's default"
            )


# The straightforward path: transformers' generate through peft's unmerged layers, every row's
# prompt in every log-prob pass, no CPU piece. generate() uses it unless given an engine;
# conf/engine/straightforward.yaml (engine=straightforward) is the same preset in config,
# tests/rollout/test_engine_pieces.py checks that the two agree.
STRAIGHTFORWARD = EngineSettings(
    sampler="hf",
    merge_adapter=False,
    shared_prompt_logprobs=False,
    pack_completions=False,
    cpu_linear="torch",
    fused_head=False,
    lean_activations=False,
    release_heap=False,
    decode_attention=False,
    kernel_cache_capacity=None,
)
