"""What medrl's LightningModules share to train under FSDP (medrl.sharding) as under DDP or
in one process: the policy becomes the root FSDP module in `configure_model`, and gradient
norms and clipping see every shard.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch import nn

from medrl import sharding


class ShardablePolicy(pl.LightningModule):
    """Mixin for modules whose policy is `self.model` (and, when not None, a frozen
    `self.reference`). Under medrl.sharding.PolicyFSDPStrategy both become root FSDP modules
    before the optimizer is built; with any other strategy nothing changes.
    """

    # (No class-level `reference`: a class attribute would shadow the submodule that
    # nn.Module keeps in _modules.)
    model: nn.Module
    # The policy's parameters of 2+ dimensions, recorded before sharding (build_optimizer).
    matrix_parameters: list[nn.Parameter] | None = None

    def configure_model(self) -> None:
        # Lightning calls this before configure_optimizers, in every fit / validate: wrap once.
        # The parameters that weight decay applies to are chosen from their shapes now, while
        # they have them: FSDP flattens every parameter into a 1-D shard.
        if self.matrix_parameters is None:
            self.matrix_parameters = [p for p in self.model.parameters() if p.ndim >= 2]
        strategy = self.trainer.strategy
        if not isinstance(strategy, sharding.PolicyFSDPStrategy):
            return
        if not sharding.is_fsdp_root(self.model):
            self.model = strategy.shard(self.model)
        reference = getattr(self, "reference", None)
        if reference is not None and not sharding.is_fsdp_root(reference):
            self.reference = strategy.shard(reference)

    def gradient_norm(self) -> float:
        """The norm of all the policy's gradients (over every shard under FSDP)."""
        return sharding.gradient_norm(self.model)

    def clip_gradient_norm(self, optimizer: Any, max_norm: float) -> None:
        """Clip the policy's gradients to norm `max_norm` (over every shard under FSDP, where
        Lightning's own norm clipping refuses to run)."""
        if max_norm <= 0:
            return
        if sharding.is_fsdp_root(self.model):
            sharding.clip_gradients(self.model, max_norm)
        else:
            self.clip_gradients(
                optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm"
            )

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Automatic optimization (SFT) clips here with the Trainer's settings.
        if sharding.is_fsdp_root(self.model) and gradient_clip_val:
            if gradient_clip_algorithm not in (None, "norm"):
                raise ValueError(
                    f"gradient_clip_algorithm={gradient_clip_algorithm!r} under trainer=fsdp: "
                    "only norm clipping sees every shard"
                )
            sharding.clip_gradients(self.model, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
