"""The `grpo` stage: GRPO on the GRPO pool from the chain's last point, then a checkpoint.

The reference policy is the point the stage starts from: with an adapter, the same weights with
adapters disabled (after an SFT stage, that is the merged SFT policy, never the raw base).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import OmegaConf

from medrl import distributed
from medrl.algorithms.grpo_settings import STAGE_KEY, grpo_stage_problems
from medrl.data.resumable import ResumableDataLoader
from medrl.stages.context import RunContext, StageOutcome, StagePoint, check_training_blocks
from medrl.stages.start import finish_stage, load_start
from medrl.stages.validation import build_validation, kept_policy
from medrl.utils.settings import raise_errors

log = logging.getLogger(__name__)
POOL = "grpo"


def run_grpo(ctx: RunContext, chain: Sequence[StagePoint]) -> StageOutcome:
    """Run `grpo.max_steps` rollout steps from the last point of `chain`; return its checkpoint."""
    settings = ctx.cfg.grpo
    # The one validation of the block (preflight reports the same), before any weights load.
    values = OmegaConf.to_container(settings, resolve=True)
    raise_errors(grpo_stage_problems(values, distributed.world_size()), f"{STAGE_KEY}.")
    check_training_blocks(ctx.cfg)
    specs = ctx.specs
    stage = ctx.stage_name(POOL)
    policy, parent = load_start(chain[-1], specs.adapter, specs.output_format)
    module = instantiate(settings.module)(
        model=policy.model,
        tokenizer=policy.tokenizer,
        prompts=ctx.pools[POOL],
        rewards=specs.rewards,
        output_format=specs.output_format,
        chat_template_kwargs=policy.chat_template_kwargs,
        seed=ctx.seed,
        samples_file=str(ctx.output_dir / "samples" / f"{stage}.jsonl"),
        max_consecutive_faults=ctx.cfg.numeric_faults.max_consecutive,
    )
    log.info("grpo conventions: %s", module.conventions())
    # One "batch" per rollout step: the module draws its own prompts (seeded, resumable).
    steps = ResumableDataLoader(
        range(settings.max_steps), batch_size=1, seed=ctx.seed, shuffle=False
    )
    validation = build_validation(ctx, stage, policy)
    trainer, resume_from = ctx.training_trainer(
        stage,
        callbacks=[validation] if validation else [],
        max_steps=settings.max_steps * module.mu,
        max_epochs=1,
    )
    trainer.fit(module, steps, ckpt_path=resume_from)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    policy, selection, val_metrics = kept_policy(
        policy, module.model, validation, trainer.global_step, module.strategy_steps_update()
    )
    return finish_stage(
        ctx,
        chain,
        stage,
        policy,
        parent,
        {POOL: list(ctx.pools[POOL])},
        metrics | val_metrics,
        selection=selection,
        validation_file=validation.history_file if validation else None,
    )
