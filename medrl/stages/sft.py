"""The `sft` stage: train on the SFT pool, validate on its held-out tail, save a checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from medrl import distributed
from medrl.algorithms.sft_batches import SFTCollator, encode_sft_pool
from medrl.algorithms.sft_settings import SFT_KEY, sft_problems
from medrl.data.records import QARecord
from medrl.data.resumable import ResumableDataLoader
from medrl.stages.context import RunContext, StageOutcome, StagePoint, check_training_blocks
from medrl.stages.start import finish_stage, load_start
from medrl.stages.validation import build_validation, kept_policy
from medrl.utils.settings import raise_errors

log = logging.getLogger(__name__)
POOL = "sft"


def split_validation(
    records: Sequence[QARecord], fraction: float
) -> tuple[list[QARecord], list[QARecord]]:
    """(train, validation): the validation slice is the pool's tail (the pool is pre-shuffled).

    A positive fraction (in [0, 1): sft_problems) holds out at least one record and always
    leaves one to train on.
    """
    if fraction == 0.0 or len(records) < 2:
        return list(records), []
    n_val = min(max(1, round(fraction * len(records))), len(records) - 1)
    return list(records[:-n_val]), list(records[-n_val:])


def validation_shard(examples: Sequence, rank: int, world_size: int) -> list:
    """Rank `rank`'s share of the held-out examples (every world_size-th one); SFTModule sums
    losses and tokens over ranks, so val/loss is that of the whole held-out slice."""
    if examples and len(examples) < world_size:
        raise ValueError(
            f"sft: {len(examples)} held-out examples for {world_size} processes; every process "
            "needs one: raise sft.val_fraction, or set it to 0 to skip validation"
        )
    return list(examples[rank::world_size])


def run_sft(ctx: RunContext, chain: Sequence[StagePoint]) -> StageOutcome:
    """Fine-tune the last point of `chain` on the SFT pool of the stage's dataset (rendered in
    its format) and return its checkpoint (checkpoints/<stage>)."""
    settings = ctx.cfg.sft
    world, rank = distributed.world_size(), distributed.rank()
    # The one validation of the block (preflight reports the same), before any weights load.
    raise_errors(sft_problems(OmegaConf.to_container(settings, resolve=True), world), f"{SFT_KEY}.")
    check_training_blocks(ctx.cfg)
    specs = ctx.specs
    stage = ctx.stage_name(POOL)
    policy, parent = load_start(chain[-1], specs.adapter, specs.output_format)
    train_records, val_records = split_validation(ctx.pools[POOL], settings.val_fraction)
    encode = dict(
        tokenizer=policy.tokenizer,
        output_format=specs.output_format,
        chat_template_kwargs=policy.chat_template_kwargs,
        max_seq_length=settings.max_seq_length,
    )
    train_examples, counts = encode_sft_pool(records=train_records, **encode)
    val_examples, _ = encode_sft_pool(records=val_records, **encode)
    log.info("sft data: %s train examples, %s held out for val/loss", counts, len(val_examples))
    if not train_examples:
        raise ValueError("sft: no training example left; raise sft.max_seq_length")

    collate = SFTCollator(pad_token_id=policy.tokenizer.pad_token_id)
    rank_batch = settings.batch_size // world  # a multiple of world: sft_problems
    # Order fixed by (seed, epoch); its position is saved in training-state checkpoints. On
    # several processes each rank takes its part of every global batch of sft.batch_size.
    train_loader = ResumableDataLoader(
        train_examples,
        batch_size=rank_batch,
        seed=ctx.seed,
        shuffle=True,
        rank=rank,
        world_size=world,
        collate_fn=collate,
        num_workers=settings.num_workers,
    )
    val_loader = DataLoader(
        validation_shard(val_examples, rank, world), batch_size=rank_batch, collate_fn=collate
    )
    module = instantiate(settings.module)(
        model=policy.model, max_consecutive_faults=ctx.cfg.numeric_faults.max_consecutive
    )
    by_steps = settings.max_steps > 0
    validation = build_validation(ctx, stage, policy)
    trainer, resume_from = ctx.training_trainer(
        stage,
        callbacks=[validation] if validation else [],
        max_steps=settings.max_steps if by_steps else -1,
        max_epochs=-1 if by_steps else settings.epochs,
        accumulate_grad_batches=settings.grad_accum,
        gradient_clip_val=settings.grad_clip,
        val_check_interval=settings.val_check_interval,
        limit_val_batches=1.0 if val_examples else 0,
    )
    _log_data_counts(trainer, counts)
    trainer.fit(module, train_loader, val_loader if val_examples else None, ckpt_path=resume_from)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if val_examples:  # a final val/loss, whether or not the schedule ended on a check
        metrics.update({k: float(v) for k, v in trainer.validate(module, val_loader)[0].items()})

    policy, selection, val_metrics = kept_policy(
        policy, module.model, validation, trainer.global_step, module.strategy_steps_update()
    )
    return finish_stage(
        ctx,
        chain,
        stage,
        policy,
        parent,
        {"sft_train": train_records, "sft_val": val_records},
        metrics | val_metrics,
        selection=selection,
        validation_file=validation.history_file if validation else None,
    )


def _log_data_counts(trainer, counts: dict[str, int]) -> None:
    for logger in trainer.loggers:
        logger.log_metrics({f"data/sft_{key}": float(value) for key, value in counts.items()})
