"""The processes of a multi-device run: starting them, and what they share.

Every rank runs the whole script (config checks, data, model, every stage), the way Lightning's
DDP launcher, torchrun and SLURM's srun all work; the Trainers of the stages then join the one
process group. So that a run needs no special stage order, the processes are created once, at
the start of the run (`launch`), by Lightning's own launcher and cluster environments (local
subprocesses, torchrun, SLURM), and not again by each stage's Trainer.

Rules the rest of medrl follows (and these helpers make short):
- only rank zero writes files (checkpoints, predictions, results, samples); the others wait at a
  `barrier` before reading what it wrote;
- everything that feeds a printed number is reduced over all ranks (`all_reduce_sum`,
  `all_gather_objects`), as sums and counts, never as an average of per-rank averages.

Without a process group (a single-process run) every helper is the identity, so the same code
runs everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's global rank; before the process group exists, the launcher's (env)."""
    if is_distributed():
        return dist.get_rank()
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_rank_zero() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait until every rank is here (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_gather_objects(value: Any) -> list[Any]:
    """[value of rank 0, value of rank 1, ...] on every rank (picklable Python objects)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks of `values` (a new tensor; the input is unchanged)."""
    if not is_distributed():
        return values.clone()
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    device = torch.device("cuda", torch.cuda.current_device()) if _nccl() else torch.device("cpu")
    total = values.detach().to(device=device, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(values.device)


def _nccl() -> bool:
    return dist.get_backend() == "nccl"


@contextmanager
def rank_zero_writes() -> Iterator[bool]:
    """`with rank_zero_writes() as writer:` write only when `writer`; every rank leaves the
    block once rank zero has finished, so what it wrote can be read right after."""
    try:
        yield is_rank_zero()
    finally:
        barrier()


def launch(trainer: DictConfig) -> int:
    """Create the run's processes and process group when `trainer` asks for more than one
    (devices x num_nodes); return the world size. Call it once, before any heavy work.

    Lightning's Fabric does the work: it starts the other local processes (re-running this
    command with the same Hydra run folder), or joins the ones torchrun or SLURM started, and
    initializes torch.distributed (gloo on CPUs, NCCL on GPUs). The stages' Trainers then find
    the process group and do not launch again.
    """
    from lightning.fabric import Fabric

    settings = OmegaConf.to_container(trainer, resolve=True)
    fabric = Fabric(
        accelerator=settings.get("accelerator", "auto"),
        devices=settings.get("devices", "auto"),
        num_nodes=settings.get("num_nodes", 1),
        strategy="ddp",  # only starts processes and the group; the Trainer brings its strategy
    )
    if fabric.world_size == 1:
        return 1
    environment = fabric.strategy.cluster_environment
    if not environment.creates_processes_externally and _in_multirun():
        raise ValueError(
            f"trainer.devices={settings.get('devices')} in a local multirun (-m): Lightning's "
            "launcher re-runs the command line, which would start the whole sweep again in "
            "every process. Run each job on several devices through a launcher that starts "
            "one task per device (hydra/launcher=slurm_gpu with hydra.launcher.tasks_per_node "
            "= trainer.devices), or start single runs with torchrun; see the README."
        )
    fabric.launch()
    # Lightning's rank-zero-only logging and loggers read this, set from the real rank.
    rank_zero_only.rank = fabric.global_rank
    log.info("process %s of %s started", fabric.global_rank, fabric.world_size)
    return fabric.world_size


def _in_multirun() -> bool:
    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN
