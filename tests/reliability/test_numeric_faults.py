"""A non-finite loss or gradient skips that update (weights and optimizer moments untouched),
is logged and counted; K in a row stop the run with a clear message after saving the last good
training state."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader

from medrl.algorithms import grpo as grpo_module
from medrl.algorithms.grpo import GRPOModule
from medrl.algorithms.numeric_faults import (
    FaultCounter,
    NumericFaultError,
    stepped_update_fault,
    update_fault,
)
from medrl.checkpoints.training_state import AtomicCheckpointIO, TrainingStateCheckpoint
from medrl.data.records import QARecord
from medrl.models import LoraAdapter, load_policy
from medrl.prompts import XmlFormat
from medrl.rewards import RewardSet
from medrl.rewards.composite import RewardComponent
from medrl.rollout import SamplingSettings

RECORDS = [
    QARecord(id=f"q{i}", question=f"Question {i}?", options={"A": "a", "B": "b"}, answer="A")
    for i in range(6)
]
# Varies on a random model's output, so every clean update moves the weights.
VARYING = RewardSet((RewardComponent("distinct", lambda text, _: len(set(text)) / 32, 1.0),))


# --- the building blocks ----------------------------------------------------------------------


def test_a_non_finite_loss_is_reported_before_the_gradients_are_looked_at():
    model = nn.Linear(2, 2)
    assert update_fault([0.5, math.nan], model) == "non-finite loss nan"
    assert update_fault([math.inf], model) == "non-finite loss inf"


def test_a_non_finite_gradient_is_reported_with_the_first_tensor_named():
    model = nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    assert update_fault([0.5], model) is None
    model.bias.grad[0] = math.inf
    assert update_fault([0.5], model) == "non-finite gradient in 1 tensors (first: bias)"


def test_an_update_the_strategy_checked_is_judged_by_its_losses_and_reported_norm():
    """Under DeepSpeed the gradients are partitioned: the norm its step reports decides."""
    assert stepped_update_fault([0.5, 0.25], 0.7) is None
    assert stepped_update_fault([0.5, math.inf], 0.7) == "non-finite loss inf"
    fault = stepped_update_fault([0.5], math.inf)
    assert fault == "non-finite gradient norm inf (DeepSpeed skipped the update)"
    assert stepped_update_fault([0.5], math.nan).startswith("non-finite gradient norm nan")


def test_the_counter_stops_only_after_k_faults_in_a_row():
    counter = FaultCounter(max_consecutive=2)
    counter.record("non-finite loss nan", "step 1")
    counter.record(None, "step 2")  # a clean update resets the run of faults
    counter.record("non-finite loss nan", "step 3")
    assert counter.stop_reason is None and counter.total == 2
    counter.record("non-finite loss inf", "step 4")
    assert counter.total == 3 and counter.consecutive == 2
    assert counter.stop_reason.startswith("2 updates in a row had a non-finite loss or gradient")
    assert "step 4: non-finite loss inf" in counter.stop_reason
    assert "numeric_faults.max_consecutive=2" in counter.stop_reason


def test_max_consecutive_below_one_is_refused_naming_the_key():
    with pytest.raises(
        ValueError, match=r"numeric_faults.max_consecutive=0: must be an integer >= 1"
    ):
        FaultCounter(0)


# --- GRPO: injected NaN losses ----------------------------------------------------------------


class TrainableSnapshots(pl.Callback):
    """The trainable weights after every rollout step."""

    def __init__(self) -> None:
        self.after_step: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *_):
        self.after_step.append(
            {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        )


def nan_loss_on_rollouts(monkeypatch, module: GRPOModule, faulty: set[int]) -> None:
    """grpo_loss returns NaN during the (1-based) rollout steps in `faulty`."""
    real = grpo_module.grpo_loss

    def loss(*args, **kwargs):
        value, metrics = real(*args, **kwargs)
        if module.rollout_step + 1 in faulty:
            value = value * math.nan
        return value, metrics

    monkeypatch.setattr(grpo_module, "grpo_loss", loss)


def grpo_module_for(tiny_spec, **kwargs) -> GRPOModule:
    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    return GRPOModule(
        policy.model,
        policy.tokenizer,
        RECORDS,
        VARYING,
        XmlFormat(),
        policy.chat_template_kwargs,
        prompts_per_step=2,
        group_size=2,
        micro_batch_size=4,
        lr=1e-2,
        sampling=SamplingSettings(max_new_tokens=4),
        **kwargs,
    )


def fit(module, steps: int, callbacks: list, tmp_path) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(range(steps), batch_size=1))
    return trainer


def test_a_nan_loss_skips_that_update_and_training_goes_on(tiny_spec, monkeypatch, tmp_path):
    module = grpo_module_for(tiny_spec, max_consecutive_faults=2)
    nan_loss_on_rollouts(monkeypatch, module, faulty={2})
    snapshots = TrainableSnapshots()
    trainer = fit(module, 4, [snapshots], tmp_path)

    after = snapshots.after_step
    assert all(torch.equal(after[1][n], after[0][n]) for n in after[0]), "faulty step moved"
    assert any(not torch.equal(after[2][n], after[1][n]) for n in after[0]), "training stopped"
    assert module.faults.total == 1 and trainer.global_step == 4
    assert trainer.callback_metrics["faults/skipped_updates"] == 1.0
    # AdamW counted 3 steps: the skipped update left its moments and step count alone.
    optimizer_steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert optimizer_steps == {3}


def test_k_faults_in_a_row_stop_the_run_after_saving_the_last_good_state(
    tiny_spec, monkeypatch, tmp_path
):
    module = grpo_module_for(tiny_spec, max_consecutive_faults=2)
    nan_loss_on_rollouts(monkeypatch, module, faulty={2, 3})
    snapshots = TrainableSnapshots()
    saver = TrainingStateCheckpoint(
        tmp_path / "resume", every_n_steps=100, keep_last=2, fingerprint={}
    )

    with pytest.raises(NumericFaultError) as caught:
        fit(module, 6, [snapshots, saver], tmp_path)

    message = str(caught.value)
    assert message.startswith("2 updates in a row had a non-finite loss or gradient")
    assert "grpo rollout step 3, update 1/1: non-finite loss nan" in message
    saved = tmp_path / "resume" / "step-000003.ckpt"
    assert f"Last good state saved to {saved}." in message
    state = torch.load(saved, weights_only=False)
    good = snapshots.after_step[0]  # after rollout 1, the last clean update
    assert set(state["state_dict"]) == set(good)
    assert all(torch.equal(state["state_dict"][n], good[n]) for n in good)
    assert state["medrl_module_state"]["faults"] == {"total": 2, "consecutive": 2}


# --- SFT, end to end: a learning rate that blows the weights up ---------------------------------


def test_an_sft_run_whose_weights_blow_up_stops_with_the_key_to_fix(compose, shared_dir, tmp_path):
    from medrl.train import run

    cfg = compose(
        "train",
        [
            "debug=smoke",
            "stages=[sft]",
            "sft.max_steps=8",
            "sft.module.lr=1e30",
            "sft.module.warmup_ratio=0",
            "sft.grad_clip=0",
            "numeric_faults.max_consecutive=2",
        ],
    )
    with open_dict(cfg):
        cfg.model.cache_dir = str(tmp_path / "model-cache")

    with pytest.raises(NumericFaultError) as caught:
        run(cfg)

    message = str(caught.value)
    assert "2 updates in a row had a non-finite loss or gradient" in message
    assert "Lower the learning rate" in message and "Last good state saved to" in message
    assert not (tmp_path / "run" / "checkpoints" / "sft").exists()  # no stage checkpoint
