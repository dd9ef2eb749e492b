"""What the SFT and GRPO modules put into (and take back from) a training-state checkpoint.

Only trainable weights are saved: the frozen base is reloaded from the stage's starting point
(whose hash the lineage checks verify), so a LoRA checkpoint of SmolLM2-135M is a few MB
instead of the whole model, and writing one every few steps stays cheap. Loading checks that
the checkpoint holds exactly the module's trainable weights, so a partial load cannot pass
unnoticed even though Lightning is told not to expect the frozen ones.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from medrl.sharding import clean_name

EXTRA_STATE_KEY = "medrl_module_state"


class TrainableWeightsCheckpointing(pl.LightningModule):
    """Mixin for medrl's LightningModules: trainable-only weights plus `extra_state()`."""

    # Lightning loads the saved (trainable-only) state dict with strict=False;
    # on_load_checkpoint below does the strict check on the keys that matter.
    strict_loading = False

    def extra_state(self) -> dict[str, Any]:
        """Counters that are not tensors of the model (override)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what extra_state() returned (override)."""

    def trainable_keys(self) -> set[str]:
        # Under FSDP the modules' names carry its wrapper segments; state dicts do not.
        return {clean_name(name) for name, param in self.named_parameters() if param.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[EXTRA_STATE_KEY] = self.extra_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:
            self.check_trainable_state(checkpoint["state_dict"])
        # else: Lightning's FSDPStrategy loaded the weights into the shards already, and took
        # them out of the checkpoint; medrl.sharding.PolicyFSDPStrategy checked them first.
        self.load_extra_state(checkpoint.get(EXTRA_STATE_KEY, {}))

    def check_trainable_state(self, state_dict: dict[str, Any]) -> None:
        """Raise unless `state_dict` holds exactly this module's trainable weights."""
        saved, expected = set(state_dict), self.trainable_keys()
        if saved != expected:
            missing, unexpected = sorted(expected - saved), sorted(saved - expected)
            raise RuntimeError(
                "the training-state checkpoint does not hold this model's trainable weights "
                f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}); was it written with "
                "another model or adapter config?"
            )
