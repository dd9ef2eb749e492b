"""AdamW with a warm-up + decay schedule, shared by the SFT and GRPO modules."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from medrl.utils.settings import Rule, choice_rule, is_number, non_negative, positive

SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
# The optimizer keys of grpo.module and sft.module (build_optimizer's arguments), checked by
# grpo_problems and sft_problems.
OPTIMIZER_RULES: tuple[Rule, ...] = (
    ("lr", positive, "must be a number > 0"),
    ("weight_decay", non_negative, "must be a number >= 0"),
    (
        "warmup_ratio",
        lambda v: is_number(v) and 0 <= v <= 1,
        "must be in [0, 1] (the fraction of the optimizer steps spent warming up)",
    ),
    ("scheduler", *choice_rule(tuple(SCHEDULERS))),
)


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    warmup_ratio: float,
    scheduler: str,
    total_steps: int,
    matrices: Collection[nn.Parameter] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters and a transformers schedule over `total_steps`.

    Weight decay skips biases and normalization weights (1-D tensors), as is standard. The
    settings were checked by the module that calls this (OPTIMIZER_RULES).
    matrices: the parameters of 2 or more dimensions, recorded before sharding (FSDP flattens
    every parameter into a 1-D shard); None = as the parameters are shaped now.
    """
    from transformers import get_scheduler

    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (check the adapter config)")
    if matrices is None:
        matrices = [p for p in trainable if p.ndim >= 2]
    decayed = {id(p) for p in matrices}  # parameters keep their identity when FSDP shards them
    groups = [
        {"params": [p for p in trainable if id(p) in decayed], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) not in decayed], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    schedule = get_scheduler(
        SCHEDULERS[scheduler],
        optimizer,
        num_warmup_steps=int(warmup_ratio * total_steps),
        num_training_steps=max(total_steps, 1),
    )
    return optimizer, schedule
