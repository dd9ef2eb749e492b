"""Validation while a stage trains, and the weights its checkpoint keeps (`validation.select`).

`GenerationValidation` is a Lightning callback for the SFT and GRPO stages: at step 0, every
`validation.every` optimizer steps and at the stage's last step it generates greedily on the
val pool through the module's own rollout engine (medrl.evaluation.predict, as the eval stage
does), computes the val metrics (medrl.evaluation.validation), logs them to every logger,
appends them to <run>/validation/<stage>.jsonl and tracks the best validation. With
`select: best` it keeps a copy of the trainable weights of the best validation (`snapshot`);
`selected_policy` gives the stage checkpoint those weights. With `patience` it stops the stage
after that many validations without improvement. Selection reads the val pool only: the eval
pool is never touched during training (preflight checks the two are disjoint).

Lightning's own EarlyStopping and ModelCheckpoint follow metrics of Lightning's validation loop;
this validation generates text outside that loop (GRPO has no validation loop at all), so the
callback keeps its own record. Its state (the record and the snapshot) travels in
training-state checkpoints: a resumed stage selects among all of its validations.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from torch import nn

from medrl import deepspeed_strategy, distributed, sharding
from medrl.data.records import QARecord
from medrl.evaluation.predictions import merge_shards, predict
from medrl.evaluation.validation import (
    BestTracker,
    ValidationSettings,
    is_due,
    metric_problem,
    validation_metrics,
)
from medrl.models import Policy, load_policy
from medrl.prompts import OutputFormat
from medrl.rollout import SamplingSettings
from medrl.stages.start import trained_policy
from medrl.utils.io import save_png

log = logging.getLogger(__name__)
HISTORY_DIR = "validation"


class GenerationValidation(pl.Callback):
    """Greedy validation on `records` at step 0, every `settings.every` optimizer steps and at
    the last step; the best one by the followed metric (`settings.metric_for` the format) and,
    with select=best, its weights kept.

    labels: the task's answer labels (None: an open-ended format, scored by text overlap).
    history_file: the JSONL file rank zero appends each validation to.
    """

    def __init__(
        self,
        settings: ValidationSettings,
        records: Sequence[QARecord],
        tokenizer: Any,
        output_format: OutputFormat,
        chat_template_kwargs: Mapping[str, Any] | None,
        seed: int,
        history_file: Path,
    ) -> None:
        if not records:
            raise ValueError(f"validation: the pool {settings.pool!r} is empty")
        self.settings = settings
        self.records = list(records)
        self.tokenizer = tokenizer
        self.output_format = output_format
        self.chat_template_kwargs = chat_template_kwargs
        self.labels = None if output_format.open_ended else self.records[0].labels
        self.metric = settings.metric_for(output_format.open_ended)
        problem = metric_problem(self.metric, output_format.open_ended)
        if problem:
            raise ValueError(f"{problem} (format={output_format.name})")
        self.seed = seed
        self.history_file = Path(history_file)
        self.sampling = SamplingSettings(greedy=True, max_new_tokens=settings.max_new_tokens)
        self.tracker = BestTracker(
            self.metric, settings.mode, settings.min_delta, settings.patience
        )
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.last_validated: int | None = None
        self.stopped_early = False

    # --- Lightning hooks ------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.last_validated is None and trainer.global_step == 0:
            self._start_history_file()
            self.validate(trainer, pl_module)  # the starting weights: step 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        if is_due(trainer.global_step, self.settings.every, self.last_validated):
            self.validate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self.last_validated:  # the last step: what `last` keeps
            self.validate(trainer, pl_module)
        if distributed.is_rank_zero():
            figure = curve_figure(self.tracker.history, self.metric)
            save_png(figure, self.history_file.with_suffix(".png"))

    def state_dict(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker.state(),
            "last_validated": self.last_validated,
            "snapshot": self.snapshot,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load(state_dict["tracker"])
        self.last_validated = state_dict["last_validated"]
        self.snapshot = state_dict["snapshot"]
        # The killed run may have appended validations after this checkpoint: rewrite the
        # file from the record the resumed stage continues.
        self._start_history_file()
        for row in self.tracker.history:
            self._append(row)

    # --- one validation ---------------------------------------------------------------------

    def validate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Predict, score, log and record the validation of the current step; every process
        calls it (under sharded weights each one runs the same forwards)."""
        step = trainer.global_step
        metrics = validation_metrics(self._predictions(pl_module), self.labels, self.seed)
        improved = self.tracker.update(step, metrics)
        if improved and self.settings.select == "best":
            self.snapshot = trainable_snapshot(pl_module)
        self.last_validated = step
        if distributed.is_rank_zero():
            self._append(self.tracker.history[-1])
            self._log(trainer, step, metrics)
        log.info(
            "validation at step %s: %s %.4f (best %.4f at step %s)",
            step,
            self.metric,
            metrics[self.metric],
            self.tracker.best_value,
            self.tracker.best_step,
        )
        if self.tracker.exhausted and not trainer.should_stop:
            self.stopped_early = True
            trainer.should_stop = True
            log.info(
                "early stop at step %s: %s validations without a better %s (patience %s)",
                step,
                self.tracker.since_best,
                self.metric,
                self.settings.patience,
            )
        return metrics

    def _predictions(self, pl_module: pl.LightningModule) -> list:
        model = pl_module.model
        # Sharded weights: every process must run the same forwards, so each predicts every
        # item; otherwise each predicts its share of the batches and the shares are merged.
        split = not sharding.weights_sharded(model) and distributed.world_size() > 1
        shard = (distributed.rank(), distributed.world_size()) if split else (0, 1)
        mine = predict(
            model,
            self.tokenizer,
            self.records,
            self.output_format,
            self.chat_template_kwargs,
            self.sampling,
            batch_size=self.settings.batch_size,
            seed=self.seed,
            shard=shard,
            engine=getattr(pl_module, "engine", None),
        )
        if not split:
            return mine
        return merge_shards(distributed.all_gather_objects(mine), self.records)

    def _log(self, trainer: pl.Trainer, step: int, metrics: Mapping[str, Any]) -> None:
        scalars = {f"val/{k}": float(v) for k, v in metrics.items() if k != "answer_histogram"}
        for label, count in metrics.get("answer_histogram", {}).items():
            scalars[f"val/answer_{label}"] = float(count)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def _start_history_file(self) -> None:
        if distributed.is_rank_zero():
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            self.history_file.write_text("")

    def _append(self, row: Mapping[str, Any]) -> None:
        if distributed.is_rank_zero():
            with self.history_file.open("a") as handle:
                handle.write(json.dumps(_json_safe(row)) + "\n")

    # --- what the stage checkpoint records --------------------------------------------------

    def selection(self, last_step: int) -> dict[str, Any]:
        """The manifest's record of which step the stage checkpoint holds, and why."""
        tracker, settings, metric = self.tracker, self.settings, self.metric
        record: dict[str, Any] = {
            "select": settings.select,
            "metric": f"val/{metric}",
            "mode": settings.mode,
            "validations": len(tracker.history),
            "last_step": last_step,
            "best_step": tracker.best_step,
            "best_value": tracker.best_value,
            "stopped_early": self.stopped_early,
        }
        if settings.select == "best" and self.snapshot is not None:
            record["step"] = tracker.best_step
            record["reason"] = (
                f"the {_mode_word(settings.mode)} val/{metric} "
                f"({tracker.best_value:.4f}) of {len(tracker.history)} validations"
            )
        else:
            record["step"] = last_step
            record["reason"] = "the last step"
        if self.stopped_early:
            record["reason"] += f"; stopped early after {settings.patience} without improvement"
        return record

    def selected_metrics(self, step: int) -> dict[str, float]:
        """The val/ scalars of the validation of `step` (the selected weights')."""
        for row in self.tracker.history:
            if row["step"] == step:
                return {
                    f"val/{k}": float(v)
                    for k, v in row.items()
                    if k not in ("step", "answer_histogram")
                }
        return {}


def curve_figure(history: Sequence[Mapping[str, Any]], metric: str) -> Figure:
    """The stage's val curve: `metric` and the format rate over steps, each with its 95%
    interval as a band (Wilson for proportions, bootstrap otherwise)."""
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    steps = [row["step"] for row in history]
    for name in dict.fromkeys([metric, "format_rate"]):
        if not all(name in row for row in history):
            continue
        values = [_number(row[name]) for row in history]
        (line,) = ax.plot(steps, values, marker="o", label=f"val/{name}")
        low = [_number(row.get(f"{name}_ci_low")) for row in history]
        high = [_number(row.get(f"{name}_ci_high")) for row in history]
        ax.fill_between(steps, low, high, alpha=0.2, color=line.get_color())
    n = history[0].get("n") if history else None
    ax.set_xlabel("optimizer step")
    ax.set_title(f"validation on {n:.0f} items, 95% intervals" if n else "validation", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _mode_word(mode: str) -> str:
    return "highest" if mode == "max" else "lowest"


def _json_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    """nan -> None, so the JSONL is strict JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


# --- weights of the best validation --------------------------------------------------------


def trainable_snapshot(pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights that train, as the stage checkpoint would take them: under
    DeepSpeed its float32 masters, under FSDP every weight gathered (both collectives, rank zero
    holds the copy), else the trainable parameters themselves."""
    model = pl_module.model
    if pl_module.strategy_steps_update():  # DeepSpeed
        return deepspeed_strategy.trainable_state_dict(model)
    if sharding.is_fsdp_root(model):
        return sharding.full_state_dict(model)
    return {
        name: param.detach().to("cpu", copy=True)
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def selected_policy(
    policy: Policy, trained: nn.Module, snapshot: dict[str, torch.Tensor], deepspeed: bool
) -> Policy:
    """The policy a `select: best` checkpoint saves: `snapshot` (trainable_snapshot's) loaded
    into the model. Without sharding that is `policy.model` itself (trained in place, its
    trainable weights set back); under FSDP or DeepSpeed a fresh load of the stage's start point
    on rank zero (the other ranks get `policy` back, as trained_policy does)."""
    if deepspeed or sharding.is_fsdp_root(trained):
        if not distributed.is_rank_zero():
            return policy
        fresh = load_policy(policy.spec, policy.adapter)
        if deepspeed:
            deepspeed_strategy.load_trainable(fresh.model, snapshot)
        else:
            fresh.model.load_state_dict(snapshot, strict=True)
        return fresh
    deepspeed_strategy.load_trainable(policy.model, snapshot)
    return policy


# --- what the stage runners call -----------------------------------------------------------


def build_validation(ctx: Any, stage: str, policy: Policy) -> GenerationValidation | None:
    """The stage's validation callback from the run's `validation` block (None when it is off
    or absent), checked before any training: the pool must exist, hold records and not be the
    evaluation pool."""
    node = ctx.cfg.get("validation")
    if node is None:
        return None
    settings = ValidationSettings.from_values(OmegaConf.to_container(node, resolve=True))
    if not settings.enabled:
        return None
    check_validation_pool(settings.pool, ctx.pools)
    return GenerationValidation(
        settings,
        list(ctx.pools[settings.pool])[: settings.limit],
        policy.tokenizer,
        ctx.specs.output_format,
        policy.chat_template_kwargs,
        ctx.seed,
        ctx.output_dir / HISTORY_DIR / f"{stage}.jsonl",
    )


def check_validation_pool(name: str, pools: Any) -> None:
    """validation.pool names a filled pool that is not the evaluation pool (selection must
    never see the items the evaluation scores)."""
    if name == pools.eval_pool:
        raise ValueError(
            f"validation.pool={name!r} is the evaluation pool (dataset.eval_pool); validation "
            "picks checkpoints, so it must use held-out training-side items: set "
            "validation.pool=val (declared in the dataset's pools)"
        )
    if name not in pools:
        raise ValueError(
            f"validation.pool={name!r} is not a pool of this dataset (pools: {list(pools)}); "
            f"declare dataset.pools.{name} or set validation.every=0"
        )
    if not pools[name]:
        raise ValueError(
            f"dataset.pools.{name} is empty; validation needs at least one record (raise its "
            "size or set validation.every=0)"
        )


def kept_policy(
    policy: Policy,
    trained: nn.Module,
    validation: GenerationValidation | None,
    last_step: int,
    deepspeed: bool,
) -> tuple[Policy, dict[str, Any], dict[str, float]]:
    """(the policy the stage checkpoint saves, the manifest's selection record, the val
    metrics of the kept step): the best validation's weights under select=best, else the
    trained weights as they are (medrl.stages.start.trained_policy)."""
    if validation is None:
        return trained_policy(policy, trained, deepspeed=deepspeed), {}, {}
    selection = validation.selection(last_step)
    step = selection["step"]
    if step != last_step:
        log.info("keeping the weights of step %s: %s", step, selection["reason"])
        kept = selected_policy(policy, trained, validation.snapshot or {}, deepspeed)
    else:
        kept = trained_policy(policy, trained, deepspeed=deepspeed)
    return kept, selection, validation.selected_metrics(step)
