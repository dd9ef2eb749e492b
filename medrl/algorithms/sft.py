"""Supervised fine-tuning: cross-entropy on the assistant tokens of rendered targets."""

from __future__ import annotations

import torch
from torch import nn

from medrl import distributed
from medrl.algorithms.losses import masked_token_nll
from medrl.algorithms.numeric_faults import (
    FaultCounter,
    NumericFaultSettings,
    drop_gradients,
    stepped_update_fault,
    update_fault,
)
from medrl.algorithms.optim import build_optimizer
from medrl.algorithms.resume_state import TrainableWeightsCheckpointing
from medrl.algorithms.sft_settings import MODULE_DEFAULTS, SFT_KEY, sft_module_problems
from medrl.algorithms.sharded import ShardablePolicy
from medrl.rollout import EngineSettings, UsesRolloutEngine
from medrl.utils.settings import raise_errors


class SFTModule(UsesRolloutEngine, ShardablePolicy, TrainableWeightsCheckpointing):
    """Trains `model` on batches from medrl.algorithms.sft_batches.SFTCollator.

    Args (all but `model` come from conf/sft/; the defaults are the values conf/sft/default.yaml
    writes, read from there: one definition):
        model: the policy (plain, or peft-wrapped so that only adapters train).
        lr, weight_decay: AdamW settings (decay is not applied to biases and norms).
        warmup_ratio: fraction of the optimizer steps spent warming the learning rate up.
        scheduler: learning-rate decay after warm-up: cosine | linear | constant.
        max_consecutive_faults: updates in a row with a non-finite loss or gradient (each one
            skipped) before the run stops; see medrl.algorithms.numeric_faults.
        engine: the run's engine settings (conf/engine/, shared with GRPO): SFT's forward and
            backward use its Linear piece, on a CPU only (cpu_linear: "onednn" runs float32
            Linears in oneDNN's matmul, "torch" in F.linear); speed only, same numbers.

    Logs train/loss (token mean of the batch), train/tokens (assistant tokens seen so far),
    val/loss (token-weighted over the validation slice), faults/skipped_updates.

    On several processes (Lightning's DDP strategy) each rank holds part of the global batch:
    its loss is normalized by the global batch's tokens and scaled by world_size, so the
    strategy's gradient average is the gradient of the global batch's token mean, exactly as
    in one process; the logged losses and token counts are those of all ranks.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = MODULE_DEFAULTS["lr"],
        weight_decay: float = MODULE_DEFAULTS["weight_decay"],
        warmup_ratio: float = MODULE_DEFAULTS["warmup_ratio"],
        scheduler: str = MODULE_DEFAULTS["scheduler"],
        max_consecutive_faults: int = NumericFaultSettings.max_consecutive,
        engine: EngineSettings | None = None,
    ) -> None:
        super().__init__()
        optim = dict(
            lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio, scheduler=scheduler
        )
        raise_errors(sft_module_problems(optim), f"{SFT_KEY}.module.")
        self.engine_settings = engine or EngineSettings()
        # from_pretrained returns eval mode; dropout (e.g. LoRA's) must be active in training.
        self.model = model.train()
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.scheduler = scheduler
        self.save_hyperparameters(ignore=["model", "engine"])
        self.tokens_seen = 0
        self.faults = FaultCounter(max_consecutive_faults)
        self._step_losses: list[torch.Tensor] = []  # the micro-batches of the coming update
        self._val_sums = torch.zeros(2, dtype=torch.float64)  # [loss * tokens, tokens]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # The graph keeps the engine's products, so Lightning's backward after this runs them.
        with self.engine.linears(self.model):
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits  # [B, L, V]
        return masked_token_nll(logits, batch["input_ids"], batch["loss_mask"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, tokens = self(batch)
        # [loss * tokens, tokens] summed over ranks: the global batch's token sum and count.
        local = torch.tensor([loss.item() * float(tokens), float(tokens)], dtype=torch.float64)
        nll_sum, batch_tokens = distributed.all_reduce_sum(local).tolist()
        world_loss = nll_sum / max(batch_tokens, 1.0)
        self.tokens_seen += int(batch_tokens)
        self._step_losses.append(torch.tensor(world_loss))
        size = len(batch["input_ids"]) * distributed.world_size()
        self.log("train/loss", world_loss, prog_bar=True, batch_size=size)
        self.log("train/tokens", float(self.tokens_seen), batch_size=size)
        # This rank's share of the global token mean, times world_size for the strategy's
        # average (1 in one process: the loss as it is).
        share = float(tokens) * distributed.world_size() / max(batch_tokens, 1.0)
        return loss * share

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this once the update's gradients are accumulated, before clipping.
        if self.strategy_steps_update():
            return  # DeepSpeed checks the gradients at its step: see optimizer_step
        fault = update_fault(self._take_step_losses(), self.model, self.gradient_norm())
        self._record_fault(fault)
        if fault is not None:
            drop_gradients(self.model)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.strategy_steps_update():  # the norm DeepSpeed measured (and acted on)
            losses = self._take_step_losses()
            self._record_fault(stepped_update_fault(losses, self.stepped_gradient_norm()))

    def _take_step_losses(self) -> list[float]:
        losses = torch.stack(self._step_losses).tolist() if self._step_losses else []
        self._step_losses.clear()
        return losses

    def _record_fault(self, fault: str | None) -> None:
        self.faults.record(fault, f"sft step {self.global_step + 1}")
        self.log("faults/skipped_updates", float(self.faults.total))

    def extra_state(self) -> dict:
        return {"tokens_seen": self.tokens_seen, "faults": self.faults.state()}

    def load_extra_state(self, state: dict) -> None:
        self.tokens_seen = int(state["tokens_seen"])
        self.faults.load(state["faults"])

    def on_validation_epoch_start(self) -> None:
        self._val_sums.zero_()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, tokens = self(batch)
        self._val_sums += torch.tensor([loss.item() * float(tokens), float(tokens)])

    def on_validation_epoch_end(self) -> None:
        # Sums over every batch of every rank: the token mean of the whole held-out slice.
        nll_sum, tokens = distributed.all_reduce_sum(self._val_sums).tolist()
        if tokens > 0:
            self.log("val/loss", nll_sum / tokens, prog_bar=True)

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(
            self.model,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio,
            scheduler=self.scheduler,
            total_steps=int(self.trainer.estimated_stepping_batches),
            matrices=self.matrix_parameters,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
