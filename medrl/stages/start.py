"""Where a stage starts (the base model or a stage checkpoint, loaded with lineage checks) and
how it ends (its checkpoint, the chain's next point)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from torch import nn

from medrl import deepspeed_strategy, distributed, sharding
from medrl.checkpoints import (
    LineageError,
    Manifest,
    ParentRef,
    save_stage_checkpoint,
    weights_hash,
)
from medrl.checkpoints.manifest import check_matches_run
from medrl.data.records import QARecord
from medrl.models import AdapterSpec, ModelSpec, Policy, QLoraAdapter, load_policy
from medrl.prompts.base import OutputFormat
from medrl.stages.context import RunContext, StageOutcome, StagePoint
from medrl.stages.resume import discard_training_state, finished_stage_metrics

# The stage checkpoint's copy of its validation history (medrl.stages.validation).
HISTORY_FILE = "validation.jsonl"

log = logging.getLogger(__name__)


def base_point(model: ModelSpec, init_from: str | None = None) -> StagePoint:
    """The chain's first point: the model group's weights, or the checkpoint `init_from`."""
    if not init_from:
        return StagePoint("base", model, None, model.name)
    if not Path(init_from).is_dir():
        raise LineageError(
            f"init_from={init_from}: no such folder; give a stage checkpoint folder, e.g. "
            "outputs/train/<run>/checkpoints/sft"
        )
    try:
        return checkpoint_point(Path(init_from), model)
    except LineageError as error:
        raise LineageError(f"init_from={init_from}: {error}") from error


def checkpoint_point(
    folder: Path, like: ModelSpec, output_format: OutputFormat | None = None
) -> StagePoint:
    """A stage checkpoint as a point, loaded with the dtype and chat settings of `like`;
    `output_format`: the format this run's config trained it for (None: unknown)."""
    manifest = Manifest.read(folder)
    spec = replace(
        like, name=f"{manifest.root_model}/{manifest.stage}", source="checkpoint", path=str(folder)
    )
    return StagePoint(manifest.stage, spec, folder, manifest.root_model, output_format)


def trained_format(point: StagePoint, stage_format: OutputFormat) -> OutputFormat:
    """The format a point's checkpoint must record: the one its own stage trained it for when
    the run knows it (a curriculum changes format between stages on purpose), else the format
    of the stage loading it (an `init_from` folder must match the run)."""
    return point.output_format or stage_format


def load_start(
    point: StagePoint, adapter: AdapterSpec, output_format: OutputFormat
) -> tuple[Policy, ParentRef]:
    """Load `point` for training with `adapter`, and describe it as the new stage's parent.

    The parent hash is taken from the weights as loaded, before any training. When `point` is
    a checkpoint, its manifest must match the format it was trained for (`trained_format`) and
    the run's chat settings, and (for
    unquantized loads) the loaded weights must be the ones its manifest names.
    """
    policy = load_policy(point.model_spec, adapter)
    parent_hash = weights_hash(policy.model)
    if point.checkpoint is None:
        spec = asdict(point.model_spec)
        return policy, ParentRef("model", point.name, policy.weights_source, parent_hash, spec)
    manifest = Manifest.read(point.checkpoint)
    expected = trained_format(point, output_format)
    check_matches_run(manifest, point.checkpoint, expected, policy.chat_template_kwargs)
    if not isinstance(adapter, QLoraAdapter) and parent_hash != manifest.weights_hash:
        raise LineageError(
            f"the weights loaded from {point.checkpoint} (hash {parent_hash[:12]}) differ from "
            f"the ones its manifest records ({manifest.weights_hash[:12]}); the folder was "
            "modified after it was written"
        )
    return policy, ParentRef("checkpoint", point.name, str(point.checkpoint), parent_hash)


def trained_policy(policy: Policy, trained: nn.Module, deepspeed: bool = False) -> Policy:
    """The policy a stage checkpoint saves, given `trained`, the training module's policy.

    Without sharding `trained` is `policy.model`, trained in place. Under FSDP it is the root
    FSDP module around it, holding shards: the full weights are gathered to rank zero and
    loaded (strictly: every tensor) into a fresh load of the model the stage started from.
    Under DeepSpeed (`deepspeed`, any ZeRO stage) the trainable weights come from its float32
    master copies (the module's own are bfloat16 roundings under bf16-mixed, partitions under
    ZeRO-3) and are loaded into such a fresh load, whose frozen weights are the start point's.
    Every rank must call this under FSDP or DeepSpeed; rank zero gets the policy it then
    writes, the other ranks `policy` back, as is.
    """
    if deepspeed:
        state = deepspeed_strategy.trainable_state_dict(trained)
        if not distributed.is_rank_zero():
            return policy
        fresh = load_policy(policy.spec, policy.adapter)
        deepspeed_strategy.load_trainable(fresh.model, state)
        return fresh
    if not sharding.is_fsdp_root(trained):
        return policy
    state = sharding.full_state_dict(trained)
    if not distributed.is_rank_zero():
        return policy
    fresh = load_policy(policy.spec, policy.adapter)
    fresh.model.load_state_dict(state, strict=True)
    return fresh


def finished_stage(ctx: RunContext, stage: str) -> StageOutcome | None:
    """When resuming: the outcome of `stage` if the killed run had finished it, else None."""
    folder = ctx.output_dir / "checkpoints" / stage
    if not ctx.resuming or not (folder / "manifest.json").is_file():
        return None
    metrics = finished_stage_metrics(folder)
    log.info("stage %s finished before the interruption; reusing %s", stage, folder)
    point = checkpoint_point(folder, ctx.specs.model, ctx.specs.output_format)
    return StageOutcome(point, metrics)


def finish_stage(
    ctx: RunContext,
    chain: Sequence[StagePoint],
    stage: str,
    policy: Policy,
    parent: ParentRef,
    pools: Mapping[str, Sequence[QARecord]],
    metrics: dict[str, float],
    selection: Mapping[str, object] | None = None,
    validation_file: Path | None = None,
) -> StageOutcome:
    """Write the stage's checkpoint (lineage: `parent`, the `pools` it trained on; with
    validation, the `selection` record of the step it holds and a copy of `validation_file`,
    the stage's validation history) and return the chain's new point."""
    folder = ctx.output_dir / "checkpoints" / stage
    # Rank zero writes; every rank leaves the block once the folder is complete, then reads it.
    with distributed.rank_zero_writes() as writer:
        if writer:
            save_stage_checkpoint(
                folder,
                model=policy.model,
                tokenizer=policy.tokenizer,
                stage=stage,
                parent=parent,
                adapter=ctx.specs.adapter,
                output_format=ctx.specs.output_format,
                chat_template_kwargs=policy.chat_template_kwargs,
                pools=pools,
                dataset=ctx.specs.dataset.name,
                seed=ctx.seed,
                root_model=chain[-1].root_model,
                resolved_config=ctx.resolved_config(),
                metrics=metrics,
                selection=selection,
                extra_files={HISTORY_FILE: validation_file} if validation_file else None,
            )
            log.info("%s checkpoint written to %s", stage, folder)
            if not ctx.cfg.checkpointing.keep_after_stage:
                discard_training_state(ctx.output_dir, stage)
    point = checkpoint_point(folder, ctx.specs.model, ctx.specs.output_format)
    return StageOutcome(point, metrics)
