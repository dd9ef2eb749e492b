"""DeepSpeed ZeRO (conf/trainer/deepspeed.yaml): optimizer states (ZeRO-1), gradients (ZeRO-2)
and weights (ZeRO-3) partitioned over the processes, with torch's own AdamW, so that no
DeepSpeed CUDA extension has to compile.

Lightning's DeepSpeedStrategy wraps the whole LightningModule in one DeepSpeed engine and
routes `manual_backward` / `optimizer.step()` to the engine's `backward` / `step`; that is kept.
What this subclass changes, and why:
- Gradient accumulation is Lightning's (SFT's `sft.grad_accum`) or the module's own (GRPO's
  micro-batches), never DeepSpeed's counter: the engine runs with
  `managed_gradient_accumulation: false` and `gradient_accumulation_steps: 1`, so every
  `backward` adds to the gradients unscaled and every `step` is an update. (DeepSpeed's counter
  would divide each loss by its gradient_accumulation_steps a second time, and step on its
  own schedule; GRPO's micro-batch count per update is not a constant of the config.)
- Clipping is DeepSpeed's (`gradient_clipping`, over every partition); its value is the
  Trainer's `gradient_clip_val` (SFT) or the module's `strategy_gradient_clip()` (GRPO's
  grad_clip: manual optimization has no Trainer clipping). DeepSpeed computes the gradient norm
  (before clipping) at its step and skips an update whose norm is not finite; the modules read
  that norm afterwards (`gradient_norm`).
- Lightning refuses any accelerator but CUDA (an exact-type check) and then reads CUDA device
  indices. DeepSpeed itself runs on CPUs (its CPU accelerator, gloo), which is how the tests
  run it: `allow_cpu=True` lets the CPU accelerator through, and preflight refuses
  trainer=deepspeed on a CPU without it.

Rules the rest of medrl follows under ZeRO-3 (these helpers make them short):
- a weight is only read inside a forward of its module (DeepSpeed's hooks gather it there and
  partition it again after); between forwards each process holds a
  1 / N partition and the parameter itself is an empty tensor
  (medrl.sharding.is_zero3_partitioned);
- every process runs the same number of forwards, in the same order (sampling runs in
  lockstep, as under FSDP);
- a stage checkpoint takes the trainable weights from DeepSpeed's float32 masters, gathered
  parameter by parameter (`trainable_state_dict`), never the whole model at once, and the
  frozen ones from a fresh load of the stage's start point.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from torch import nn

from medrl import distributed
from medrl.utils.config import defaults_from_config
from medrl.utils.settings import (
    Problem,
    SettingsBlock,
    bool_rule,
    choice_rule,
    count_rule,
)

ZERO_STAGES = (1, 2, 3)
BACKENDS = (None, "nccl", "gloo")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
@defaults_from_config("trainer/deepspeed", "strategy")
class DeepSpeedSettings(SettingsBlock):
    """trainer.strategy of trainer=deepspeed, checked once: PolicyDeepSpeedStrategy raises on
    these problems when built, preflight reports them (medrl/preflight/strategy.py). The
    defaults are conf/trainer/deepspeed.yaml's; the keys are PolicyDeepSpeedStrategy's."""

    BLOCK, PARENT = "strategy", "trainer"
    RULES = (
        ("stage", *choice_rule(ZERO_STAGES)),
        ("reduce_bucket_size", *count_rule(1, "elements per gradient reduction")),
        ("allgather_bucket_size", *count_rule(1, "elements per weight gather")),
        ("process_group_backend", *choice_rule(BACKENDS)),
        *(
            (name, *bool_rule())
            for name in (
                "offload_optimizer",
                "offload_parameters",
                "contiguous_gradients",
                "overlap_comm",
                "exclude_frozen_parameters",
                "allow_cpu",
            )
        ),
    )

    stage: int
    offload_optimizer: bool
    offload_parameters: bool
    contiguous_gradients: bool
    overlap_comm: bool
    reduce_bucket_size: int
    allgather_bucket_size: int
    exclude_frozen_parameters: bool
    process_group_backend: str | None
    allow_cpu: bool

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[Problem]:
        problems = super().check(values)
        merged = {**cls.defaults(), **values}
        stage = merged.get("stage")
        if merged.get("overlap_comm") is True and stage == 1:
            # DeepSpeed asserts it at initialize when the accumulation is not its own.
            problems.append(
                Problem(
                    "overlap_comm",
                    True,
                    "overlaps the gradient reduction with the backward, which DeepSpeed allows "
                    "only where it partitions gradients (stage 2 or 3) when the accumulation "
                    "is medrl's; set {prefix}overlap_comm=false with {prefix}stage=1",
                )
            )
        if merged.get("offload_parameters") is True and stage != 3:
            problems.append(
                Problem(
                    "offload_parameters",
                    True,
                    f"only ZeRO-3 partitions the weights it would offload (stage={stage}); set "
                    "{prefix}stage=3 or {prefix}offload_parameters=false",
                )
            )
        return problems


class PolicyDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy with medrl's choices, each a key of
    conf/trainer/deepspeed.yaml (no **kwargs, so a misspelt key fails when the config binds).

    stage: ZeRO stage: 1 optimizer states, 2 + gradients, 3 + weights partitioned.
    offload_optimizer: keep the optimizer states in CPU memory (ZeRO-Offload). Off: with torch's
        AdamW the CPU step is slow (DeepSpeed's fast CPU Adam is a compiled extension).
    offload_parameters: keep ZeRO-3's weight partitions in CPU memory between uses.
    contiguous_gradients, overlap_comm, reduce_bucket_size, allgather_bucket_size: DeepSpeed's
        zero_optimization settings of the same names (memory / speed only).
    exclude_frozen_parameters: training-state checkpoints leave out the frozen base (LoRA:
        only adapters and their optimizer states are written; the base is reloaded on resume).
    process_group_backend: None = NCCL on GPUs, gloo on CPUs.
    allow_cpu: run on Lightning's CPU accelerator with DeepSpeed's CPU accelerator (gloo).
        For tests and the gpu-check's dry run only: slow, and nothing about GPU memory or
        speed carries over. Preflight refuses trainer=deepspeed on a CPU without it.
    """

    def __init__(
        self,
        stage: int = DeepSpeedSettings.stage,
        offload_optimizer: bool = DeepSpeedSettings.offload_optimizer,
        offload_parameters: bool = DeepSpeedSettings.offload_parameters,
        contiguous_gradients: bool = DeepSpeedSettings.contiguous_gradients,
        overlap_comm: bool = DeepSpeedSettings.overlap_comm,
        reduce_bucket_size: int = DeepSpeedSettings.reduce_bucket_size,
        allgather_bucket_size: int = DeepSpeedSettings.allgather_bucket_size,
        exclude_frozen_parameters: bool = DeepSpeedSettings.exclude_frozen_parameters,
        process_group_backend: str | None = DeepSpeedSettings.process_group_backend,
        allow_cpu: bool = DeepSpeedSettings.allow_cpu,
    ) -> None:
        DeepSpeedSettings(  # checks every key, naming it (preflight reports the same)
            stage=stage,
            offload_optimizer=offload_optimizer,
            offload_parameters=offload_parameters,
            contiguous_gradients=contiguous_gradients,
            overlap_comm=overlap_comm,
            reduce_bucket_size=reduce_bucket_size,
            allgather_bucket_size=allgather_bucket_size,
            exclude_frozen_parameters=exclude_frozen_parameters,
            process_group_backend=process_group_backend,
            allow_cpu=allow_cpu,
        )
        zero: dict[str, Any] = {
            "stage": stage,
            "contiguous_gradients": contiguous_gradients,
            "overlap_comm": overlap_comm,
            "reduce_bucket_size": reduce_bucket_size,
            "allgather_bucket_size": allgather_bucket_size,
        }
        if offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        if offload_parameters:
            zero["offload_param"] = {"device": "cpu"}
        super().__init__(
            config={
                "zero_optimization": zero,
                # torch's AdamW: DeepSpeed calls every optimizer but its own "untested".
                "zero_allow_untested_optimizer": True,
                # One line per 10 k steps instead of DeepSpeed's default of every 10.
                "steps_per_print": 10_000,
                # Offloaded states with torch's AdamW (not DeepSpeed's compiled CPU Adam):
                # DeepSpeed refuses that pairing unless told it is meant.
                "zero_force_ds_cpu_optimizer": False,
            },
            process_group_backend=process_group_backend,
            exclude_frozen_parameters=exclude_frozen_parameters,
        )
        self.stage = stage
        self.allow_cpu = allow_cpu

    # --- devices ----------------------------------------------------------------------------

    def setup_environment(self) -> None:
        if isinstance(self.accelerator, CUDAAccelerator):
            super().setup_environment()
            return
        if not (self.allow_cpu and isinstance(self.accelerator, CPUAccelerator)):
            raise RuntimeError(
                f"trainer=deepspeed on {type(self.accelerator).__name__}: DeepSpeed runs on CUDA "
                "GPUs here; set trainer.accelerator=gpu on a CUDA machine (or use trainer=ddp / "
                "fsdp; trainer.strategy.allow_cpu=true is for tests)"
            )
        DDPStrategy.setup_environment(self)  # Lightning's own, without its CUDA-only check

    def setup_distributed(self) -> None:
        if self._on_cuda():
            super().setup_distributed()
            return
        # CPU devices have no index, so Lightning's check of the CUDA indices does not apply.
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _on_cuda(self) -> bool:
        return isinstance(self.accelerator, CUDAAccelerator)

    def _device_rank(self) -> int:
        # DeepSpeed takes a device index; a CPU device has none (Lightning passes None).
        index = self.root_device.index
        return self.local_rank if index is None else index

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        """Lightning's, with a device index DeepSpeed accepts on CPUs too."""
        import deepspeed

        engine, deepspeed_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self._device_rank()),
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, deepspeed_optimizer

    def _initialize_deepspeed_inference(self, model: nn.Module) -> None:
        """Lightning's engine for validate / test (no optimizer), with a device index
        DeepSpeed accepts on CPUs too."""
        import deepspeed
        from lightning.pytorch.strategies.deepspeed import remove_module_hooks

        assert isinstance(self.config, dict)
        config: dict[str, Any] = {"train_micro_batch_size_per_gpu": 1}
        config.update({k: self.config[k] for k in ("fp16", "bf16") if k in self.config})
        if self.zero_stage_3:
            config["zero_allow_untested_optimizer"] = True
            config["zero_optimization"] = self.config["zero_optimization"]
        remove_module_hooks(model)
        self.model, _, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self._device_rank()),
            config=config,
            model=model,
            optimizer=None,
            lr_scheduler=None,
            model_parameters=[],
            dist_init_required=False,
        )

    # --- training-state checkpoints ---------------------------------------------------------

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None
    ) -> None:
        """Lightning's DeepSpeed checkpoint (a folder: every process writes its partitions of
        the optimizer states, rank zero the trainable weights, `exclude_frozen_parameters`),
        written into a staging folder beside `filepath` and renamed to it once every process
        has finished, so a crash mid-write leaves the earlier checkpoints as they were
        (medrl.checkpoints.training_state reads and prunes such folders)."""
        target = Path(self.broadcast(str(filepath)))
        staging = target.with_name(f".{target.name}.{self.broadcast(uuid.uuid4().hex)}.tmp")
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier()
        if self.is_global_zero:
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        self.barrier()

    # --- accumulation and clipping ----------------------------------------------------------

    @property
    def handles_gradient_accumulation(self) -> bool:
        # Lightning accumulates SFT's batches (calling backward only, then one step); GRPO's
        # micro-batches are its own. DeepSpeed steps whenever asked (unmanaged, below).
        return False

    @contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        """Around the backward of a batch Lightning accumulates: nothing to block. Lightning
        would enter the engine's no_sync, which ZeRO-2/3 refuse (they reduce each backward's
        gradients into their partitions as it runs)."""
        yield

    def _format_batch_size_and_grad_accum_config(self) -> None:
        assert isinstance(self.config, dict)
        module = self.lightning_module
        if module is None:
            return
        self.config["gradient_accumulation_steps"] = 1
        self.config["managed_gradient_accumulation"] = False
        # Only DeepSpeed's throughput logging reads it; medrl's batches are its own.
        self.config.setdefault("train_micro_batch_size_per_gpu", 1)
        clip = getattr(module, "strategy_gradient_clip", lambda: None)()
        if clip is None:
            clip = module.trainer.gradient_clip_val
        self.config["gradient_clipping"] = float(clip or 0.0)
        log.info("DeepSpeed config: %s", json.dumps(self.config, sort_keys=True))


# --- helpers for code that reads weights -------------------------------------------------------


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s trainable parameters as DeepSpeed's optimizer holds them: its float32 master
    copies (with bf16-mixed the module's own weights are rounded to bfloat16; under ZeRO the
    masters are partitioned over the processes), gathered whole one parameter at a time, on
    rank zero (on the CPU); an empty dict on the other ranks. A collective: every process
    calls it after training. Frozen weights never change, so a stage checkpoint takes them
    from a fresh load of its start point (medrl.stages.start.trained_policy)."""
    from deepspeed.utils import safe_get_full_fp32_param

    rank_zero = distributed.is_rank_zero()
    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        master = safe_get_full_fp32_param(param)
        if master is None:
            raise RuntimeError(f"DeepSpeed holds no float32 master copy of {name}")
        if rank_zero:
            state[name] = master.detach().to("cpu", copy=True)
    return state


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` (trainable_state_dict's) into `model`'s trainable parameters, in their
    dtype; every trainable parameter must be in it, and nothing else."""
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(trainable) - set(state)), sorted(set(state) - set(trainable))
    if missing or unexpected:
        raise RuntimeError(
            f"the trained weights do not match the model's trainable parameters: missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}"
        )
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(state[name].to(param.dtype))
