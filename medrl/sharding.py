"""Fully sharded data parallel (FSDP): the policy's weights, gradients and optimizer states
split over the processes (conf/trainer/fsdp.yaml).

Lightning's own FSDPStrategy makes the whole LightningModule the root FSDP module and runs
`training_step` inside that module's forward. GRPO calls backward inside `training_step`
(manual optimization), which FSDP does not allow inside a forward (Lightning-AI/
pytorch-lightning#19626, #19685), and FSDP's `clip_grad_norm_` refuses to run there. So here
the LightningModules wrap their policy themselves, in Lightning's `configure_model` hook
(medrl.algorithms.sharded): the policy is the root FSDP module, each of its decoder layers an
FSDP unit, every call of the policy a root forward and every backward outside any forward.

Rules the rest of medrl follows under FSDP (these helpers make them short):
- a weight is only read inside a forward of the policy, or after `full_state_dict` gathered it:
  between forwards each process holds a flat 1-D shard of every parameter;
- every process runs the same number of policy forwards, in the same order: each one gathers
  the shards of every layer from all processes (sampling keeps the processes in step);
- gradient norms and clipping go through the root module (`gradient_norm`, `clip_gradients`):
  a process's own gradients are a shard, whose norm is not the model's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    OptimStateKeyType,
    StateDictType,
)
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from medrl.utils.config import config_values

# The name segment FSDP inserts between a wrapper and the module it wraps.
_FSDP_WRAPPED = "_fsdp_wrapped_module."
# PolicyFSDPStrategy's defaults: the values conf/trainer/fsdp.yaml writes (one definition).
FSDP_DEFAULTS = config_values("trainer/fsdp", "strategy")


class PolicyFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy for medrl's modules: they make their policy the root FSDP
    module (`shard`, called from their `configure_model`), whose FSDP units are the model's
    decoder layers.

    sharding_strategy: FULL_SHARD (weights, gradients and optimizer states sharded),
        SHARD_GRAD_OP (weights whole between forward and backward) or NO_SHARD (as DDP);
        preflight refuses the hybrid ones, which need a device mesh medrl does not build.
    wrap_layers: class names of the modules that become FSDP units (each one's parameters are
        gathered for its forward and backward, then freed); None = the model's own
        `_no_split_modules` (transformers lists its decoder layers there).
    use_orig_params: keep the model's own parameters as views of FSDP's flat shards. Needed
        with LoRA (a unit holds frozen weights and trainable adapters) and for the optimizer's
        per-parameter groups; preflight refuses false.
    state_dict_type: full (training-state checkpoints gathered into one file by rank zero) or
        sharded (a folder of per-rank files; preflight refuses it: medrl's checkpoints are files).
    cpu_offload: keep the shards in CPU memory between uses (GPU runs).
    process_group_backend: None = gloo on CPUs, NCCL on GPUs.
    Every argument is named (no **kwargs), so a misspelt key fails when the config is bound.

    Lightning refuses its FSDPStrategy on a CPU accelerator (an exact-type check); torch's FSDP
    itself runs on CPUs with gloo, which is how the tests run it (2 CPU processes). This class
    is a subclass, so that check does not apply; preflight checks the backend instead.
    """

    def __init__(
        self,
        sharding_strategy: str = FSDP_DEFAULTS["sharding_strategy"],
        wrap_layers: Sequence[str] | None = FSDP_DEFAULTS["wrap_layers"],
        use_orig_params: bool = FSDP_DEFAULTS["use_orig_params"],
        state_dict_type: str = FSDP_DEFAULTS["state_dict_type"],
        cpu_offload: bool = FSDP_DEFAULTS["cpu_offload"],
        process_group_backend: str | None = FSDP_DEFAULTS["process_group_backend"],
    ) -> None:
        super().__init__(
            sharding_strategy=sharding_strategy,
            use_orig_params=use_orig_params,
            state_dict_type=state_dict_type,
            cpu_offload=cpu_offload,
            process_group_backend=process_group_backend,
        )
        self.wrap_layers = list(wrap_layers) if wrap_layers else None

    def shard(self, model: nn.Module) -> FullyShardedDataParallel:
        """`model` as a root FSDP module on this process's device, its `wrap_layers` as units.

        The same construction Lightning's FSDPStrategy applies to a whole LightningModule,
        with this strategy's settings."""
        policy = ModuleWrapPolicy(layer_classes(model, self.wrap_layers))
        return FullyShardedDataParallel(
            module=model,
            auto_wrap_policy=policy,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            # The device itself, not its index as Lightning passes: torch's FSDP then also
            # accepts the CPU (an index of None would make it look for an accelerator).
            device_id=self.root_device,
            **self.kwargs,
        )

    # Training-state checkpoints (state_dict_type=full). Lightning gathers them with FSDP's
    # offload_to_cpu, which crashes the processes (SIGSEGV, torch 2.13) when the weights are
    # on the CPU already; there they are gathered without it. Otherwise Lightning's own code.

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if not self._full_on_cpu():
            return super().lightning_module_state_dict()
        with full_state_dict_type(self.model, self.root_device):
            return self.model.state_dict()

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        if not self._full_on_cpu():
            return super().optimizer_state(optimizer)
        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        with full_state_dict_type(self.model, self.root_device):
            state = FullyShardedDataParallel.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # keyed by parameter index, as a plain optimizer's
                state = FullyShardedDataParallel.rekey_optim_state_dict(
                    state, OptimStateKeyType.PARAM_ID, self.model
                )
            return state

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> Any:
        """Lightning's, after checking that a full checkpoint holds exactly the module's
        trainable weights (Lightning loads them non-strictly and removes them from the
        checkpoint before the module's on_load_checkpoint could look)."""
        path = Path(self.broadcast(checkpoint_path))
        check = getattr(self.lightning_module, "check_trainable_state", None)
        if path.is_file() and check is not None:
            check(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["state_dict"])
        return super().load_checkpoint(path, weights_only)

    def _full_on_cpu(self) -> bool:
        return self._state_dict_type == "full" and self.root_device.type == "cpu"


def layer_classes(model: nn.Module, names: Sequence[str] | None = None) -> set[type[nn.Module]]:
    """The classes of `model`'s submodules named in `names` (None: the model's own
    `_no_split_modules`, its decoder layers for transformers models). Raises ValueError naming
    trainer.strategy.wrap_layers when a name matches no submodule or nothing names the layers.
    """
    if names is None:
        names = no_split_module_names(model)
        if not names:
            raise ValueError(
                f"{type(model).__name__} does not list its decoder layers (_no_split_modules); "
                "name the layer classes to shard in trainer.strategy.wrap_layers, e.g. "
                "[Qwen3DecoderLayer]"
            )
    by_name = {type(module).__name__: type(module) for module in model.modules()}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(
            f"trainer.strategy.wrap_layers: {missing} name no module of {type(model).__name__}; "
            f"its module classes: {sorted(by_name)}"
        )
    return {by_name[name] for name in names}


def no_split_module_names(model: nn.Module) -> list[str]:
    """transformers' `_no_split_modules` of the first submodule that lists them (a peft model
    wraps the transformers model that does)."""
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return list(names)
    return []


def is_fsdp_managed(model: nn.Module) -> bool:
    """True when FSDP manages `model`'s parameters: it is, holds, or sits inside an FSDP module
    (torch marks every module under a root FSDP module with `_is_fsdp_managed_module`, as
    transformers' generate also checks). Its weights are then flat shards between forwards."""
    return any(
        isinstance(module, FullyShardedDataParallel)
        or getattr(module, "_is_fsdp_managed_module", False)
        for module in model.modules()
    )


def is_zero3_partitioned(model: nn.Module) -> bool:
    """True when DeepSpeed ZeRO-3 partitions `model`'s weights (trainer=deepspeed with stage 3,
    medrl.deepspeed_strategy): DeepSpeed marks each parameter it converts with a `ds_id`, and
    between forwards the parameter is an empty placeholder for this process's partition."""
    return any(
        hasattr(param, "ds_id")
        for module in model.modules()
        for param in module.parameters(recurse=False)
    )


def weights_sharded(model: nn.Module) -> bool:
    """True when a process holds only part of `model`'s weights between forwards (FSDP, or
    DeepSpeed ZeRO-3): a weight is then whole only inside its module's forward, where the
    strategy gathers it from all processes. Code that reads or swaps weights directly (merged
    adapters, the fused LM head, oneDNN Linears) must stay off, and every process must run the
    same forwards (lockstep sampling)."""
    return is_fsdp_managed(model) or is_zero3_partitioned(model)


def is_fsdp_root(model: nn.Module) -> bool:
    return isinstance(model, FullyShardedDataParallel)


def local_gradient_norm(model: nn.Module) -> float:
    """The L2 norm over every gradient this process holds for `model` (0.0 when there is none)."""
    grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(grads)).item() if grads else 0.0


def gradient_norm(model: nn.Module) -> float:
    """The L2 norm of all of `model`'s gradients. For a root FSDP module, over every process's
    shard (a collective: every process must call it); FSDP's clip_grad_norm_ with an infinite
    bound computes it and leaves the gradients as they are (scaled by exactly 1)."""
    if is_fsdp_root(model):
        return float(model.clip_grad_norm_(math.inf))
    return local_gradient_norm(model)


def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """Scale a root FSDP module's gradients so that their norm over all shards is at most
    `max_norm` (a collective). Other models are clipped by their Lightning strategy."""
    if not is_fsdp_root(model):
        raise TypeError(f"clip_gradients takes a root FSDP module, not {type(model).__name__}")
    model.clip_grad_norm_(max_norm)


def clean_name(name: str) -> str:
    """A parameter name without FSDP's wrapper segments: the name it has in the plain model and
    in FSDP's full state dicts."""
    return name.replace(_FSDP_WRAPPED, "")


def full_state_dict_type(
    model: nn.Module, device: torch.device, rank0_only: bool = True
) -> AbstractContextManager:
    """FSDP's full state dicts (weights and optimizer) for every FSDP module in `model`, on
    rank zero only (`rank0_only`), moved to the CPU unless they are there already (offloading
    CPU weights crashes torch's FSDP: SIGSEGV in torch 2.13)."""
    offload = device.type != "cpu"
    return FullyShardedDataParallel.state_dict_type(
        model,
        StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
        FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
    )


def full_state_dict(model: FullyShardedDataParallel) -> dict[str, torch.Tensor]:
    """Every weight of a root FSDP module, gathered from all processes onto rank zero (on the
    CPU), under the plain model's names; an empty dict on the other ranks. A collective: every
    process must call it."""
    with full_state_dict_type(model, model.compute_device):
        state = model.state_dict()
    return {name: tensor.cpu() for name, tensor in state.items()}


@contextmanager
def root_weights_gathered(model: nn.Module) -> Iterator[None]:
    """Inside the block, a root FSDP module's own (root-unit) weights are whole on every process
    and its units still gather theirs in their forwards: for code that calls the policy's
    inner modules, not its root forward (transformers' generate through peft). A no-op for
    other models."""
    if not is_fsdp_root(model):
        yield
        return
    with FullyShardedDataParallel.summon_full_params(model, recurse=False, writeback=False):
        yield
