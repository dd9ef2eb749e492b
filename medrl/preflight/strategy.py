"""Checks of the trainer's strategy against what the training stages can run: combinations
that cannot work under FSDP or DeepSpeed are refused before any process starts, naming the key
to change.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from omegaconf import DictConfig

from medrl.deepspeed_strategy import DeepSpeedSettings
from medrl.preflight.report import CheckResult, failed, passed
from medrl.preflight.values import block_results, processes, select, values_at
from medrl.utils.settings import show

KEY = "trainer.strategy"
# Lightning's own FSDP, by registry name or class: it wraps the whole LightningModule.
LIGHTNING_FSDP = ("fsdp", "fsdp_cpu_offload", "lightning.pytorch.strategies.FSDPStrategy")
MEDRL_FSDP = "medrl.sharding.PolicyFSDPStrategy"
SHARDING_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD")
# Lightning's own DeepSpeed, by registry name or class: it lets DeepSpeed count accumulation
# steps (a second division of each loss) and leaves GRPO's gradients unclipped.
LIGHTNING_DEEPSPEED = (
    "deepspeed",
    "deepspeed_stage_1",
    "deepspeed_stage_2",
    "deepspeed_stage_2_offload",
    "deepspeed_stage_3",
    "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme",
    "lightning.pytorch.strategies.DeepSpeedStrategy",
    "lightning.pytorch.strategies.deepspeed.DeepSpeedStrategy",
)
MEDRL_DEEPSPEED = "medrl.deepspeed_strategy.PolicyDeepSpeedStrategy"
# The precisions trainer=deepspeed was run with: 32-true, and bf16-mixed (DeepSpeed's bf16
# mode: bf16 weights, fp32 master copies in the optimizer).
# ("32" and "bf16" are Lightning's short names of the same two.)
DEEPSPEED_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16")
CUDA_ACCELERATORS = ("gpu", "cuda")


def strategy_name(node: Any) -> str | None:
    """The strategy as configured: its registry name, or its `_target_`."""
    if isinstance(node, str) or node is None:
        return node
    return node.get("_target_")


def is_fsdp(cfg: DictConfig) -> bool:
    return strategy_name(select(cfg, KEY)) in (*LIGHTNING_FSDP, MEDRL_FSDP)


def strategy_checks(cfg: DictConfig) -> list[CheckResult]:
    """FSDP's and DeepSpeed's requirements, for the SFT and GRPO stages (evaluation does not
    shard weights)."""
    name = strategy_name(select(cfg, KEY))
    if name in LIGHTNING_DEEPSPEED or name == MEDRL_DEEPSPEED:
        return deepspeed_checks(cfg, name)
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
        check_no_quantized_base(cfg, "fsdp", "FSDP", FSDP_QLORA),
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


def check_no_quantized_base(cfg: DictConfig, trainer: str, label: str, why: str) -> CheckResult:
    """adapter=qlora under a strategy that cannot hold bitsandbytes' 4-bit weights (`why`)."""
    kind = select(cfg, "adapter._target_")
    if kind != "medrl.models.QLoraAdapter":
        return passed("strategy", f"adapter: {show(kind)} under {label}", "adapter")
    return failed(
        "strategy",
        f"adapter=qlora with trainer={trainer}: {why}; use adapter=lora with trainer={trainer}, "
        "or adapter=qlora with trainer=ddp",
        "adapter",
    )


# FSDP flattens each unit's weights into one floating-point tensor; bitsandbytes keeps 4-bit
# weights as integers (torch's error, seen here).
FSDP_QLORA = (
    "FSDP cannot shard bitsandbytes' 4-bit weights (it flattens a unit's weights into one float "
    "tensor; torch: 'Cannot flatten integer dtype tensors')"
)
# ZeRO-3 partitions every weight as a flat float tensor; stages 1-2 leave frozen weights
# alone, but DeepSpeed casts and broadcasts the whole module at setup, which has not been run
# with 4-bit weights (they need CUDA, which this project's tests lack).
ZERO_QLORA = (
    "ZeRO-3 cannot partition bitsandbytes' packed 4-bit weights (it flattens every weight into "
    "a float partition), and QLoRA under ZeRO-1/2 is untried"
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


# --- trainer=deepspeed ----------------------------------------------------------------------


def deepspeed_checks(cfg: DictConfig, name: str) -> list[CheckResult]:
    """trainer=deepspeed's requirements (medrl.deepspeed_strategy)."""
    if name != MEDRL_DEEPSPEED:
        return [
            failed(
                "strategy",
                f"{KEY}={name}: Lightning's own DeepSpeed counts accumulation steps itself "
                "(each loss divided twice) and leaves GRPO's gradients unclipped; use "
                f"trainer=deepspeed ({MEDRL_DEEPSPEED})",
                KEY,
            )
        ]
    return [
        check_deepspeed_installed(),
        check_cuda_accelerator(cfg),
        *deepspeed_settings_checks(cfg),
        check_no_quantized_base(cfg, "deepspeed", "DeepSpeed", ZERO_QLORA),
        check_deepspeed_precision(cfg),
        check_backend(cfg),
    ]


def deepspeed_settings_checks(cfg: DictConfig) -> list[CheckResult]:
    """The strategy block's own rules (DeepSpeedSettings, which the strategy raises on too)."""
    values = {k: v for k, v in values_at(cfg, KEY).items() if k != "_target_"}
    return block_results("strategy", KEY, DeepSpeedSettings.check(values))


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def check_deepspeed_installed() -> CheckResult:
    if deepspeed_installed():
        return passed("strategy", "deepspeed is installed", KEY)
    return failed(
        "strategy",
        "trainer=deepspeed: the deepspeed package is not installed; `make install-deepspeed` "
        "installs it without compiling any CUDA extension (or use trainer=fsdp / ddp)",
        KEY,
    )


def check_cuda_accelerator(cfg: DictConfig) -> CheckResult:
    """DeepSpeed runs on CUDA GPUs (Lightning's DeepSpeedStrategy refuses anything else). Its
    CPU accelerator is let through only with trainer.strategy.allow_cpu=true, for tests."""
    key = "trainer.accelerator"
    accelerator = select(cfg, key)
    if accelerator == "cpu" and select(cfg, f"{KEY}.allow_cpu") is True:
        return passed(
            "strategy", f"{key}=cpu with {KEY}.allow_cpu=true (tests: DeepSpeed on CPUs)", key
        )
    cuda = torch.cuda.is_available()
    if accelerator in (*CUDA_ACCELERATORS, "auto") and cuda:
        return passed("strategy", f"{key}={show(accelerator)}: CUDA for DeepSpeed", key)
    why = "no CUDA device is available here" if not cuda else "DeepSpeed needs CUDA GPUs"
    return failed(
        "strategy",
        f"{key}={show(accelerator)} with trainer=deepspeed: {why}; run trainer=deepspeed with "
        f"{key}=gpu on a CUDA machine, or pick another trainer here (trainer=cpu / ddp / "
        f"fsdp; {KEY}.allow_cpu=true is for tests only)",
        key,
    )


def check_deepspeed_precision(cfg: DictConfig) -> CheckResult:
    key = "trainer.precision"
    return check_setting(
        cfg,
        key,
        lambda value: str(value) in DEEPSPEED_PRECISIONS,
        "must be 32-true or bf16-mixed with trainer=deepspeed (the precisions it was run "
        "with; fp16 would bring DeepSpeed's loss scaling into GRPO's update)",
    )
