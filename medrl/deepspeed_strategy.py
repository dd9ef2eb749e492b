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
  partition it again after), or inside `gathered(...)`; between forwards each process holds a
  1 / N partition and the parameter itself is an empty tensor (`is_partitioned`);
- every process runs the same number of forwards, in the same order (sampling runs in
  lockstep, as under FSDP);
- the full weights for a stage checkpoint are gathered parameter by parameter
  (`full_state_dict`), never the whole model at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from torch import nn

from medrl import distributed
from medrl.sharding import is_zero3_partitioned
from medrl.utils.config import config_values

ZERO_STAGES = (1, 2, 3)
# The strategy's defaults: the values conf/trainer/deepspeed.yaml writes (one definition).
DEFAULTS = config_values("trainer/deepspeed", "strategy")
log = logging.getLogger(__name__)


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
        stage: int = DEFAULTS["stage"],
        offload_optimizer: bool = DEFAULTS["offload_optimizer"],
        offload_parameters: bool = DEFAULTS["offload_parameters"],
        contiguous_gradients: bool = DEFAULTS["contiguous_gradients"],
        overlap_comm: bool = DEFAULTS["overlap_comm"],
        reduce_bucket_size: int = DEFAULTS["reduce_bucket_size"],
        allgather_bucket_size: int = DEFAULTS["allgather_bucket_size"],
        exclude_frozen_parameters: bool = DEFAULTS["exclude_frozen_parameters"],
        process_group_backend: str | None = DEFAULTS["process_group_backend"],
        allow_cpu: bool = DEFAULTS["allow_cpu"],
    ) -> None:
        if stage not in ZERO_STAGES:
            raise ValueError(f"trainer.strategy.stage={stage}: must be one of {ZERO_STAGES}")
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


def is_partitioned(model: nn.Module) -> bool:
    """True when DeepSpeed ZeRO-3 partitions `model`'s weights: between forwards each parameter
    is an empty placeholder (its data lives in 1 / N partitions over the processes)."""
    return is_zero3_partitioned(model)


@contextmanager
def gathered(params: list[nn.Parameter]) -> Iterator[None]:
    """Inside the block, ZeRO-3-partitioned `params` are whole on every process (read-only:
    changes are not written back). A collective: every process must enter it. A no-op for
    parameters DeepSpeed does not partition."""
    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every entry of `model`'s state dict, whole, on rank zero (on the CPU); an empty dict on
    the other ranks. ZeRO-3 partitions are gathered one parameter at a time, so no process
    ever holds more than one whole parameter beyond its partitions. A collective."""
    rank_zero = distributed.is_rank_zero()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        with gathered([tensor]) if isinstance(tensor, nn.Parameter) else nullcontext():
            if rank_zero:
                state[name] = tensor.detach().to("cpu", copy=True)
    return state
