"""What medrl's LightningModules share to train under FSDP (medrl.sharding) and DeepSpeed
(medrl.deepspeed_strategy) as under DDP or in one process: under FSDP the policy becomes the
root FSDP module in `configure_model`, and gradient norms and clipping see every shard; under
DeepSpeed the engine's step reduces, measures, clips and (when not finite) skips each update,
and the modules read the norm it measured.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.strategies import DeepSpeedStrategy
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

    def strategy_steps_update(self) -> bool:
        """True under trainer=deepspeed: DeepSpeed's step reduces the gradients (partitioned
        over the processes, so `param.grad` holds none), computes their norm over every
        partition, clips them to its gradient_clipping (`strategy_gradient_clip`) and skips
        the update when that norm is not finite. The module records the norm afterwards
        (`stepped_gradient_norm`) instead of measuring and clipping before the step."""
        trainer = self._trainer
        return trainer is not None and isinstance(trainer.strategy, DeepSpeedStrategy)

    def strategy_gradient_clip(self) -> float | None:
        """The norm bound a strategy that clips at its own step applies (DeepSpeed's
        gradient_clipping); None: the Trainer's gradient_clip_val (automatic optimization).
        Modules with manual optimization and their own bound override it."""
        return None

    def stepped_gradient_norm(self) -> float:
        """The gradient norm before clipping that DeepSpeed computed at its last step, over
        every partition (inf when it skipped the update for a non-finite norm)."""
        norm = self.trainer.strategy.deepspeed_engine.get_global_grad_norm()
        return math.nan if norm is None else float(norm)

    def start_micro_batch(self) -> None:
        """Call before the forward of each micro-batch whose backward adds to one update inside
        a training_step (GRPO). DeepSpeed resets its per-backward state (the count that makes
        ZeRO-3 add a backward's gradients to the earlier ones instead of replacing them) only
        in its engine's forward, which Lightning runs once, around the whole training_step:
        without this, ZeRO-3 kept only the last micro-batch's gradients (DeepSpeed 0.19.8)."""
        if not self.strategy_steps_update():
            return
        optimizer = self.trainer.strategy.deepspeed_engine.optimizer
        clear = getattr(optimizer, "clear_backward_seen_flag", None)  # ZeRO optimizers
        if clear is not None:
            clear()
        elif self.trainer.strategy.zero_stage_3:
            # Without the reset ZeRO-3 keeps only the last micro-batch's gradients: stop
            # rather than train on them (a DeepSpeed outside the pinned range renamed it).
            raise RuntimeError(
                "DeepSpeed's ZeRO-3 optimizer has no clear_backward_seen_flag (medrl needs it "
                "to add micro-batches' gradients); install the pinned deepspeed (constraints.txt)"
            )

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
