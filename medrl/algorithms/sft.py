"""Supervised fine-tuning: cross-entropy on the assistant tokens of rendered targets."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from medrl.algorithms.losses import masked_token_nll
from medrl.algorithms.optim import build_optimizer


class SFTModule(pl.LightningModule):
    """Trains `model` on batches from medrl.data.collate.SFTCollator.

    Args (all but `model` come from conf/sft/):
        model: the policy (plain, or peft-wrapped so that only adapters train).
        lr, weight_decay: AdamW settings (decay is not applied to biases and norms).
        warmup_ratio: fraction of the optimizer steps spent warming the learning rate up.
        scheduler: learning-rate decay after warm-up: cosine | linear | constant.

    Logs train/loss (token mean of the batch), train/tokens (assistant tokens seen so far),
    val/loss (token-weighted over the validation slice).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 2.0e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        scheduler: str = "cosine",
    ) -> None:
        super().__init__()
        # from_pretrained returns eval mode; dropout (e.g. LoRA's) must be active in training.
        self.model = model.train()
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.scheduler = scheduler
        self.save_hyperparameters(ignore=["model"])
        self.tokens_seen = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # [B, L, V]
        return masked_token_nll(logits, batch["input_ids"], batch["loss_mask"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, tokens = self(batch)
        self.tokens_seen += int(tokens)
        size = len(batch["input_ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/tokens", float(self.tokens_seen), batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, tokens = self(batch)
        # batch_size=tokens makes Lightning's epoch mean a token-weighted mean.
        self.log("val/loss", loss, prog_bar=True, batch_size=int(tokens))

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(
            self.model,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio,
            scheduler=self.scheduler,
            total_steps=int(self.trainer.estimated_stepping_batches),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
