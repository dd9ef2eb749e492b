"""Checks of the trainer's strategy against what the training stages can run: combinations
that cannot work under FSDP are refused before any process starts, naming the key to change.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from medrl.preflight.report import CheckResult, failed, passed
from medrl.preflight.values import processes, select
from medrl.utils.settings import show

KEY = "trainer.strategy"
# Lightning's own FSDP, by registry name or class: it wraps the whole LightningModule.
LIGHTNING_FSDP = ("fsdp", "fsdp_cpu_offload", "lightning.pytorch.strategies.FSDPStrategy")
MEDRL_FSDP = "medrl.sharding.PolicyFSDPStrategy"
SHARDING_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD")


def strategy_name(node: Any) -> str | None:
    """The strategy as configured: its registry name, or its `_target_`."""
    if isinstance(node, str) or node is None:
        return node
    return node.get("_target_")


def is_fsdp(cfg: DictConfig) -> bool:
    return strategy_name(select(cfg, KEY)) in (*LIGHTNING_FSDP, MEDRL_FSDP)


def strategy_checks(cfg: DictConfig) -> list[CheckResult]:
    """FSDP's requirements, for the SFT and GRPO stages (evaluation does not shard weights)."""
    name = strategy_name(select(cfg, KEY))
    if name in LIGHTNING_FSDP:
        return [
            failed(
                "strategy",
                f"{KEY}={name}: Lightning's FSDP wraps the whole LightningModule, so GRPO's "
                "backward inside its training step fails and gradients cannot be clipped; use "
                f"trainer=fsdp ({MEDRL_FSDP}), where the policy is the root FSDP module",
                KEY,
            )
        ]
    if name != MEDRL_FSDP:
        return [passed("strategy", f"{KEY}={show(name)}: no FSDP requirement", KEY)]
    return [
        check_no_quantized_base(cfg),
        check_more_than_one_process(cfg),
        check_sharding_strategy(cfg),
        check_setting(
            cfg,
            f"{KEY}.use_orig_params",
            lambda value: value is True,
            "must be true: a LoRA unit holds frozen weights and trainable adapters together, "
            "and the optimizer's groups name the model's own parameters",
        ),
        check_setting(
            cfg,
            f"{KEY}.state_dict_type",
            lambda value: value == "full",
            "must be full: medrl's training-state checkpoints are single files, written "
            "atomically and found by name (sharded writes a folder of per-rank files)",
        ),
        check_backend(cfg),
    ]


def check_no_quantized_base(cfg: DictConfig) -> CheckResult:
    """FSDP flattens each unit's weights into one floating-point tensor; bitsandbytes keeps
    4-bit weights as integers (torch: "Cannot flatten integer dtype tensors", seen here)."""
    kind = select(cfg, "adapter._target_")
    if kind != "medrl.models.QLoraAdapter":
        return passed("strategy", f"adapter: {show(kind)} under FSDP", "adapter")
    return failed(
        "strategy",
        "adapter=qlora with trainer=fsdp: FSDP cannot shard bitsandbytes' 4-bit weights (it "
        "flattens a unit's weights into one float tensor; torch: 'Cannot flatten integer "
        "dtype tensors'); use adapter=lora with trainer=fsdp, or adapter=qlora with "
        "trainer=ddp",
        "adapter",
    )


def check_more_than_one_process(cfg: DictConfig) -> CheckResult:
    """FSDP on one process shards nothing: torch switches it to NO_SHARD, and there (torch 2.13,
    use_orig_params) the second update of a model with tied weights (embed_tokens and lm_head:
    the tiny Qwen3, SmolLM2, small Qwen3) fails with torch's assertion on the shared parameter
    ("as_params=True type(prim_param)=<class 'torch.Tensor'>"), after the first one has run."""
    key = "trainer.devices"
    world = processes(cfg)
    if world != 1:
        return passed("strategy", f"{key}={show(select(cfg, key))}: FSDP over the processes", key)
    return failed(
        "strategy",
        f"{key}={show(select(cfg, key))} with trainer=fsdp: one process has nothing to shard "
        "(torch falls back to NO_SHARD, which fails on tied weights at the second update); "
        "use trainer=gpu (or cpu) for one device, or trainer.devices >= 2",
        key,
    )


def check_sharding_strategy(cfg: DictConfig) -> CheckResult:
    key = f"{KEY}.sharding_strategy"
    return check_setting(
        cfg,
        key,
        lambda value: value in SHARDING_STRATEGIES,
        f"must be one of {list(SHARDING_STRATEGIES)} (the hybrid strategies need a device "
        "mesh that medrl does not build)",
    )


def check_backend(cfg: DictConfig) -> CheckResult:
    """On CPUs the processes talk through gloo; NCCL only connects GPUs."""
    key = f"{KEY}.process_group_backend"
    backend, accelerator = select(cfg, key), select(cfg, "trainer.accelerator")
    if accelerator != "cpu" or backend in (None, "gloo"):
        return passed("strategy", f"{key}={show(backend)} on {show(accelerator)}", key)
    return failed(
        "strategy",
        f"{key}={backend} with trainer.accelerator=cpu: processes on CPUs communicate through "
        "gloo; set it to gloo or null",
        key,
    )


def check_setting(cfg: DictConfig, key: str, test, requirement: str) -> CheckResult:
    value = select(cfg, key)
    if test(value):
        return passed("strategy", f"{key}={show(value)}", key)
    return failed("strategy", f"{key}={show(value)}: {requirement}", key)
