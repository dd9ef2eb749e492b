"""One process of tests/distributed/test_fsdp.py: `python fsdp_worker.py RANK PORT OUT_DIR`.

Builds the same tiny LoRA Qwen3 in each of 2 gloo processes, shards it as trainer=fsdp does
(medrl.sharding.PolicyFSDPStrategy.shard's construction), and writes what the test compares
with the unsharded model to OUT_DIR/rank<RANK>.pt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

WORLD = 2
MAX_NEW_TOKENS = 6


def tiny_lora_model() -> torch.nn.Module:
    """A random 2-layer Qwen3 (vocab 96, so greedy paths are short) with LoRA on q/k/v/o."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=True,
    )
    model = Qwen3ForCausalLM(config).eval()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, lora)
    for name, param in model.named_parameters():  # LoRA B starts at 0: make the adapters count
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def greedy(model: torch.nn.Module, prompt: torch.Tensor, eos: list[int], lockstep: bool):
    from medrl.rollout.decoding import decode
    from medrl.rollout.settings import SamplingSettings

    settings = SamplingSettings(greedy=True, max_new_tokens=MAX_NEW_TOKENS)
    with torch.no_grad():
        return decode(
            model, prompt, torch.ones_like(prompt), 1, settings, eos, 0, lockstep=lockstep
        )


def prompts() -> list[torch.Tensor]:
    return [torch.tensor([[5, 17, 33, 2]]), torch.tensor([[61, 8, 40, 71, 12]])]


def early_eos(plain: torch.nn.Module) -> int:
    """A token that rank 0's greedy completion reaches within 2 steps and rank 1's never does:
    as the eos, it ends rank 0's row early while rank 1 keeps decoding."""
    never = [-1]  # no token id: the rows run to max_new_tokens
    first, second = (greedy(plain, p, never, lockstep=False)[0].tolist() for p in prompts())
    for token in first[:2]:
        if token not in second:
            return token
    raise AssertionError(f"no early eos for {first} vs {second}; change the prompts")


def losses(model: torch.nn.Module, rank: int) -> torch.Tensor:
    """Rank `rank`'s half of a batch: the mean next-token loss of its 2 rows."""
    torch.manual_seed(100 + rank)
    ids = torch.randint(1, 96, (2, 7))
    return model(input_ids=ids, labels=ids).loss


def main(rank: int, port: int, out_dir: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from medrl.algorithms.optim import build_optimizer
    from medrl.rollout.merged_adapter import can_merge_exactly
    from medrl.sharding import (
        PolicyFSDPStrategy,
        clip_gradients,
        full_state_dict,
        gradient_norm,
        is_fsdp_managed,
    )

    plain = tiny_lora_model()
    eos = early_eos(plain)
    report: dict = {"plain_can_merge": can_merge_exactly(plain), "eos": eos}
    report["expected"] = greedy(plain, prompts()[rank], [eos], lockstep=False)
    report["plain_state"] = {k: v.clone() for k, v in plain.state_dict().items()}
    # The unsharded gradient of the batch's loss (the mean of the two halves, as FSDP averages).
    plain.zero_grad()
    ((losses(plain, 0) + losses(plain, 1)) / 2).backward()
    report["plain_grad_norm"] = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in plain.parameters() if p.grad is not None])
    ).item()

    model = tiny_lora_model()
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    strategy = PolicyFSDPStrategy()
    strategy.parallel_devices = [torch.device("cpu")] * WORLD
    root = strategy.shard(model)
    report["fsdp_managed"] = is_fsdp_managed(root)
    report["fsdp_can_merge"] = can_merge_exactly(root)
    report["units"] = sorted(
        type(m.module).__name__ for m in root.modules() if isinstance(m, FSDP) and m is not root
    )

    forwards = []
    root.register_forward_hook(lambda *_: forwards.append(1))
    report["sharded"] = greedy(root, prompts()[rank], [eos], lockstep=True)
    report["forwards"] = len(forwards)

    root.zero_grad()
    losses(root, rank).backward()
    report["grad_norm"] = gradient_norm(root)
    # This process's own gradients: views of its shard (a rank may hold no adapter at all).
    local = [p.grad.norm() for p in root.parameters() if p.grad is not None]
    report["local_grad_norm"] = (
        torch.linalg.vector_norm(torch.stack(local)).item() if local else 0.0
    )
    clip_gradients(root, 0.5 * report["grad_norm"])
    report["clipped_norm"] = gradient_norm(root)

    report["full_state"] = full_state_dict(root)
    optimizer, _ = build_optimizer(
        root, lr=1e-3, weight_decay=0.1, warmup_ratio=0.0, scheduler="constant", total_steps=1
    )
    report["decayed_without_matrices"] = _decayed(optimizer)
    optimizer, _ = build_optimizer(
        root,
        lr=1e-3,
        weight_decay=0.1,
        warmup_ratio=0.0,
        scheduler="constant",
        total_steps=1,
        matrices=matrices,
    )
    report["decayed_with_matrices"] = _decayed(optimizer)
    report["trainable_matrices"] = sum(p.requires_grad for p in matrices)
    report["shard_ndims"] = sorted({p.ndim for p in root.parameters()})
    torch.save(report, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


def _decayed(optimizer) -> int:
    return sum(len(g["params"]) for g in optimizer.param_groups if g["weight_decay"] > 0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
