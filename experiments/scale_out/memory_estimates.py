"""Estimated GPU memory per process for GRPO on Qwen3 0.6B / 1.7B / 4B with LoRA and QLoRA.

ESTIMATES, not measurements: computed from each model's published architecture (Qwen3 model
cards: hidden size, layers, heads, vocabulary; tied embeddings for these three sizes) and the
default GRPO settings of conf/grpo/standard.yaml. Under DDP every process holds all of this
(the model is replicated, only the batch is split), so the per-GPU figure does not shrink with
more GPUs; what shrinks is the rollout per process (B / N prompts).

    python experiments/scale_out/memory_estimates.py > experiments/scale_out/memory_estimates.md

Terms (bytes):
- weights: bf16 (2 per parameter); QLoRA: NF4 linear layers (0.5 per parameter plus one fp32
  absmax per 64 weights, double-quantized: ~0.127 bits more), embeddings kept in bf16.
- adapter: LoRA r=16 on q/k/v/o: fp32 weights + gradients + AdamW's two moments (16 per
  parameter).
- rollout KV cache: 2 (K, V) x layers x kv_heads x head_dim x 2 bytes per token, for the
  rollout's rows x (prompt + max_new_tokens) tokens, preallocated by medrl's sampler.
- activations of one micro-batch kept for the backward pass, without checkpointing: per layer
  and token about 34 h bytes at 16 bits (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", eq. 2, without its 5 a s attention-score term:
  transformers' default SDPA attention does not keep the score matrix), plus the micro-batch's
  fp32 log-softmax over the vocabulary (medrl scores completion positions only: s_c x V x 4
  per row).
- CUDA context and allocator slack are not included: add about 1-2 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Architecture:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int = 151_936

    def linear_params(self) -> int:
        """Parameters of the attention and MLP projections (what QLoRA quantizes)."""
        q = self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_heads * self.head_dim
        o = self.heads * self.head_dim * self.hidden
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (q + kv + o + mlp)

    def embedding_params(self) -> int:
        return self.vocab * self.hidden  # tied with the output layer

    def lora_params(self, rank: int) -> int:
        """LoRA on q, k, v, o: rank x (fan_in + fan_out) per projection."""
        q = rank * (self.hidden + self.heads * self.head_dim)
        kv = 2 * rank * (self.hidden + self.kv_heads * self.head_dim)
        o = rank * (self.heads * self.head_dim + self.hidden)
        return self.layers * (q + kv + o)

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


# Qwen3 model cards (Qwen/Qwen3-0.6B, -1.7B, -4B config.json).
QWEN3 = [
    Architecture("Qwen3-0.6B", 1024, 28, 16, 8, 128, 3072),
    Architecture("Qwen3-1.7B", 2048, 28, 16, 8, 128, 6144),
    Architecture("Qwen3-4B", 2560, 36, 32, 8, 128, 9728),
]


@dataclass(frozen=True)
class Workload:
    """conf/grpo/standard.yaml's defaults on one process."""

    prompts: int = 4  # B per process (prompts_per_step / number of processes)
    group: int = 4  # G
    prompt_tokens: int = 512
    new_tokens: int = 256
    micro_batch: int = 4  # completions per forward / backward
    lora_rank: int = 16


def activation_bytes(arch: Architecture, load: Workload) -> float:
    tokens = load.prompt_tokens + load.new_tokens
    per_layer = tokens * load.micro_batch * arch.hidden * 34
    log_softmax = load.micro_batch * load.new_tokens * arch.vocab * 4
    return arch.layers * per_layer + log_softmax


def estimate(
    arch: Architecture, quantized: bool, load: Workload, fsdp_processes: int = 1
) -> dict[str, float]:
    """Bytes per process. fsdp_processes > 1: trainer=fsdp (FULL_SHARD, bf16 LoRA): each
    process keeps 1/N of the decoder layers' weights and adapter states, plus the root unit
    (embedding, whole during a forward) and two gathered decoder layers (the one computing and
    the one prefetched); each process samples and trains its 1/N of the rows."""
    linear, embedding = arch.linear_params(), arch.embedding_params()
    weights = embedding * 2 + (linear * (0.5 + 0.127 / 8) if quantized else linear * 2)
    adapter = arch.lora_params(load.lora_rank) * 16
    rows = load.prompts * load.group
    if fsdp_processes > 1:
        layer = linear * 2 / arch.layers
        weights = embedding * 2 + linear * 2 / fsdp_processes + 2 * layer
        adapter /= fsdp_processes
        rows //= fsdp_processes
    figures = {
        "weights": weights,
        "adapter + AdamW": adapter,
        "rollout KV cache": rows
        * (load.prompt_tokens + load.new_tokens)
        * arch.kv_bytes_per_token(),
        "activations (1 micro-batch)": activation_bytes(arch, load),
    }
    figures["total"] = sum(figures.values())
    return figures


def table(load: Workload) -> str:
    columns = ["weights", "adapter + AdamW", "rollout KV cache", "activations (1 micro-batch)"]
    lines = [
        "| model | adapter | " + " | ".join(columns) + " | total (est.) |",
        "| --- | --- | " + " | ".join("---:" for _ in columns) + " | ---: |",
    ]
    setups = [(False, 1, "LoRA (bf16)"), (True, 1, "QLoRA (NF4)"), (False, 4, "LoRA, fsdp x4")]
    for arch in QWEN3:
        for quantized, processes, adapter in setups:
            figures = estimate(arch, quantized, load, processes)
            cells = [f"{figures[c] / GIB:.2f}" for c in [*columns, "total"]]
            lines.append(f"| {arch.name} | {adapter} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    load = Workload()
    print(
        f"GiB per process, estimated (not measured): B={load.prompts} prompts x G={load.group}, "
        f"{load.prompt_tokens} prompt + {load.new_tokens} new tokens, micro-batch "
        f"{load.micro_batch}, LoRA r={load.lora_rank} on q/k/v/o, no activation checkpointing; "
        "fsdp x4: trainer=fsdp on 4 processes (FULL_SHARD), each with 1/4 of the rows.\n"
    )
    print(table(load))
