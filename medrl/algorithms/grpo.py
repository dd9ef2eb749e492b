"""GRPO as a LightningModule with manual optimization: one training_step = one rollout step.

Per step: B prompts -> G completions each -> rewards [B, G] -> group advantages -> reference
log-probs (adapters disabled, or a frozen copy for full fine-tuning; none when beta = 0) ->
mu passes over micro-batches (gradient accumulation, clipping, optimizer and scheduler steps).
With mu = 1 the old log-probs are the current ones detached (no extra forward pass).
All math is in medrl.algorithms.core; sampling and log-prob passes go through the rollout
engine (medrl.rollout.RolloutEngine: speed only); what is logged is computed in
medrl.algorithms.grpo_metrics. This module is the loop.

On several processes (Lightning's DDP strategy) every rank draws the same B prompts and keeps
its own B / world_size of them, with all G completions of a prompt on one rank. Rewards are
gathered so advantages see the whole batch (std_scope=batch is the batch of all ranks); the loss
is normalized by the whole batch's sequence and token counts and scaled by world_size, so the
strategy's gradient average is the gradient of the single-process loss on the same prompts.
Every logged number is computed over all ranks. Each prompt samples from its own random stream,
seeded by the run seed and the prompt's position in the prompt stream, so a prompt draws the
same completions on any rank and with any world size (medrl's sampler).
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrl import distributed
from medrl.algorithms.core import (
    batch_renormalize,
    decoupled_advantages,
    group_advantages,
    grpo_loss,
    high_entropy_mask,
    high_entropy_threshold,
)
from medrl.algorithms.grpo_metrics import (
    batch_metrics,
    log_sample_table,
    metric_sums,
    rollout_facts,
    rollout_metrics,
)
from medrl.algorithms.grpo_settings import (
    MODULE_DEFAULTS,
    MODULE_KEY,
    AdvantageSettings,
    ClipSettings,
    DynamicSampling,
    EntropySettings,
    KLSettings,
    SequenceClipSettings,
    grpo_problems,
)
from medrl.algorithms.numeric_faults import (
    FaultCounter,
    NumericFaultSettings,
    drop_gradients,
    stepped_update_fault,
    update_fault,
)
from medrl.algorithms.optim import build_optimizer
from medrl.algorithms.resume_state import TrainableWeightsCheckpointing
from medrl.algorithms.sharded import ShardablePolicy
from medrl.data.pools import shuffled_order
from medrl.data.records import QARecord
from medrl.prompts import build_messages, render_prompt
from medrl.prompts.base import OutputFormat
from medrl.rewards import RewardSample, RewardSet
from medrl.rollout import (
    EngineSettings,
    Rollout,
    SamplingSettings,
    UsesRolloutEngine,
    eval_mode,
    merge_rollouts,
)
from medrl.utils.settings import raise_errors
from medrl.utils.timing import timed


@dataclass
class RolloutBatch:
    """One step's rollout, local to the step: prompts, samples, rewards and advantages."""

    records: list[QARecord]  # B
    rollout: Rollout  # N = B*G rows, prompt-major
    rewards: torch.Tensor  # [B, G]
    adv: torch.Tensor  # [N]
    components: list[dict[str, float]]  # N per-completion unweighted component rewards
    # N per-completion {judge component: failure or None}; {} rows when the set has no judge
    judge_failures: list[dict[str, str | None]]
    extra_draws: int = 0  # dynamic sampling: extra batches of prompts drawn for this step
    # Computed once per rollout, read by dynamic sampling and the metrics:
    zero_std: torch.Tensor = field(init=False)  # [B] bool: the group's reward totals are equal
    # [B] bool: some advantage of the group is not 0 (any estimator, any reward aggregation:
    # with normalize_then_sum a group with equal totals can still carry signal)
    signal: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.zero_std = self.rewards.max(1).values == self.rewards.min(1).values  # [B]
        self.signal = (self.adv.view(len(self.records), -1) != 0).any(dim=1)  # [B]

    def groups_with_signal(self) -> list[int]:
        """The indices of the groups that carry signal (what dynamic sampling keeps)."""
        return [b for b in range(len(self.records)) if self.signal[b]]


def prompt_seed(run_seed: int, draw_index: int) -> int:
    """The random-stream seed of the `draw_index`-th prompt drawn in a run (unique per pair)."""
    return (run_seed * 0x9E3779B1 + draw_index) % (2**63)


class PromptSampler:
    """Endless seeded passes over the prompt pool; the position is part of resumable state."""

    def __init__(self, records: Sequence[QARecord], seed: int) -> None:
        if not records:
            raise ValueError("the GRPO pool is empty")
        self.records = list(records)
        self.seed = seed
        self.position = 0
        self._epoch = -1
        self._order: list[int] = []

    def take(self, count: int) -> list[QARecord]:
        batch = [self._at(self.position + i) for i in range(count)]
        self.position += count
        return batch

    def take_indexed(self, count: int) -> list[tuple[int, QARecord]]:
        """The next `count` prompts with their draw index (position in the endless stream)."""
        start = self.position
        return list(enumerate(self.take(count), start=start))

    def _at(self, index: int) -> QARecord:
        epoch, offset = divmod(index, len(self.records))
        if self._epoch != epoch:  # a fresh seeded order for every pass over the pool
            self._order = shuffled_order(len(self.records), self.seed + epoch)
            self._epoch = epoch
        return self.records[self._order[offset]]


class GRPOModule(UsesRolloutEngine, ShardablePolicy, TrainableWeightsCheckpointing):
    """GRPO on a policy (peft LoRA / QLoRA or full fine-tuning).

    Args (all but the first five come from conf/grpo/; the defaults are the values
    conf/grpo/standard.yaml writes, read from there: one definition):
        model, tokenizer: the policy; with a peft model the reference is the same weights with
            adapters disabled, i.e. the policy the stage started from.
        prompts: the GRPO pool; rewards: the reward set; output_format: renders the prompts.
        chat_template_kwargs: passed to the chat template (enable_thinking ...).
        prompts_per_step (B), group_size (G), mu (update passes per rollout),
        micro_batch_size (completions per forward/backward), sampling, engine (how rollouts
        are sampled and their log-probs computed: speed only, conf/engine/ and
        medrl.rollout.EngineSettings; built for the policy's device on first use), advantage
        (AdvantageSettings), importance_sampling (token | sequence: GSPO), clip (the token-level
        clip range), sequence_clip (the sequence-level one), policy_loss (clip | cispo), entropy
        (EntropySettings), kl, loss_aggregation, mask_truncated (truncated completions get no
        loss), dynamic_sampling,
        lr, weight_decay, warmup_ratio, scheduler, grad_clip, seed, max_consecutive_faults
        (updates in a row with a non-finite loss or gradient, each skipped, before the run
        stops; see medrl.algorithms.numeric_faults), sample_table_every (log a
        table of completions every N rollout steps; 0 = never), samples_file (a JSONL file that
        also receives those tables; the stage runner puts it in the run folder).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompts: Sequence[QARecord],
        rewards: RewardSet,
        output_format: OutputFormat,
        chat_template_kwargs: dict[str, Any] | None = None,
        prompts_per_step: int = MODULE_DEFAULTS["prompts_per_step"],
        group_size: int = MODULE_DEFAULTS["group_size"],
        mu: int = MODULE_DEFAULTS["mu"],
        micro_batch_size: int = MODULE_DEFAULTS["micro_batch_size"],
        sampling: SamplingSettings | None = None,
        engine: EngineSettings | None = None,
        advantage: AdvantageSettings | None = None,
        importance_sampling: str = MODULE_DEFAULTS["importance_sampling"],
        clip: ClipSettings | None = None,
        sequence_clip: SequenceClipSettings | None = None,
        policy_loss: str = MODULE_DEFAULTS["policy_loss"],
        entropy: EntropySettings | None = None,
        kl: KLSettings | None = None,
        loss_aggregation: str = MODULE_DEFAULTS["loss_aggregation"],
        mask_truncated: bool = MODULE_DEFAULTS["mask_truncated"],
        dynamic_sampling: DynamicSampling | None = None,
        lr: float = MODULE_DEFAULTS["lr"],
        weight_decay: float = MODULE_DEFAULTS["weight_decay"],
        warmup_ratio: float = MODULE_DEFAULTS["warmup_ratio"],
        scheduler: str = MODULE_DEFAULTS["scheduler"],
        grad_clip: float = MODULE_DEFAULTS["grad_clip"],
        seed: int = 0,
        max_consecutive_faults: int = NumericFaultSettings.max_consecutive,
        sample_table_every: int = MODULE_DEFAULTS["sample_table_every"],
        samples_file: str | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.tokenizer = tokenizer
        self.rewards = rewards
        self.output_format = output_format
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.B, self.G, self.mu = prompts_per_step, group_size, mu
        self.micro_batch_size = micro_batch_size
        self.sampling = sampling or SamplingSettings()
        self.engine_settings = engine or EngineSettings()
        self.advantage = advantage or AdvantageSettings()
        self.importance_sampling = importance_sampling
        self.clip = clip or ClipSettings()
        self.sequence_clip = sequence_clip or SequenceClipSettings()
        self.policy_loss = policy_loss
        self.entropy = entropy or EntropySettings()
        self.kl = kl or KLSettings()
        self.loss_aggregation = loss_aggregation
        self.mask_truncated = mask_truncated
        self.dynamic_sampling = dynamic_sampling or DynamicSampling()
        self.optim = dict(
            lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio, scheduler=scheduler
        )
        self.grad_clip = grad_clip
        self.seed = seed
        self.sample_table_every = sample_table_every
        self.samples_file = Path(samples_file) if samples_file else None
        self.sampler = PromptSampler(prompts, seed)
        self.rollout_step = 0
        self.faults = FaultCounter(max_consecutive_faults)
        self._check()
        # beta = 0: no reference at all. Full fine-tuning: a frozen copy of the start weights.
        self.reference = None
        if self.kl.beta > 0 and not _is_peft(model):
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)

    def settings_values(self) -> dict[str, Any]:
        """The module's settings as grpo.module names them (what grpo_problems checks)."""
        return {
            "prompts_per_step": self.B,
            "group_size": self.G,
            "mu": self.mu,
            "micro_batch_size": self.micro_batch_size,
            **self.optim,
            "grad_clip": self.grad_clip,
            "sampling": self.sampling,
            "mask_truncated": self.mask_truncated,
            "sample_table_every": self.sample_table_every,
            "loss_aggregation": self.loss_aggregation,
            "importance_sampling": self.importance_sampling,
            "policy_loss": self.policy_loss,
            "advantage": self.advantage,
            "clip": self.clip,
            "sequence_clip": self.sequence_clip,
            "entropy": self.entropy,
            "kl": self.kl,
            "dynamic_sampling": self.dynamic_sampling,
        }

    def _check(self, world_size: int | None = None) -> None:
        """The one validation of grpo.module (medrl.algorithms.grpo_settings, which preflight
        runs too); with `world_size`, also the rules over processes."""
        raise_errors(grpo_problems(self.settings_values(), world_size), f"{MODULE_KEY}.")

    def conventions(self) -> dict[str, Any]:
        """The resolved GRPO variant: every convention that changes the math, as one record."""
        return {
            "prompts_per_step": self.B,
            "group_size": self.G,
            "mu": self.mu,
            "micro_batch_size": self.micro_batch_size,
            "sampling": asdict(self.sampling),
            "engine": asdict(self.engine_settings),
            "advantage": asdict(self.advantage),
            "reward_weights": dict(zip(self.rewards.names, self._reward_weights(), strict=True)),
            "importance_sampling": self.importance_sampling,
            "clip": asdict(self.clip),
            "sequence_clip": asdict(self.sequence_clip),
            "policy_loss": self.policy_loss,
            "entropy": asdict(self.entropy),
            "kl": asdict(self.kl),
            "loss_aggregation": self.loss_aggregation,
            "mask_truncated": self.mask_truncated,
            "dynamic_sampling": asdict(self.dynamic_sampling),
            "reference": self._reference_kind(),
            "optimizer": self.optim,
            "grad_clip": self.grad_clip,
        }

    def _reward_weights(self) -> list[float]:
        return [component.weight for component in self.rewards.components]

    def _clip_range(self) -> tuple[float, float]:
        """(eps_low, eps_high) of the importance-sampling level in use."""
        clip = self.sequence_clip if self.importance_sampling == "sequence" else self.clip
        return clip.eps_low, clip.eps_high

    def _reference_kind(self) -> str:
        if self.kl.beta == 0:
            return "none (beta = 0)"
        return "start weights, adapters disabled" if _is_peft(self.model) else "frozen copy"

    # --- Lightning hooks -----------------------------------------------------------------

    def extra_state(self) -> dict[str, int]:
        """The prompt sampler's position and the rollout counter (resumable state)."""
        return {
            "prompt_position": self.sampler.position,
            "rollout_step": self.rollout_step,
            "faults": self.faults.state(),
        }

    def load_extra_state(self, state: dict) -> None:
        self.sampler.position = int(state["prompt_position"])
        self.rollout_step = int(state["rollout_step"])
        self.faults.load(state["faults"])

    def setup(self, stage: str) -> None:
        self._check(distributed.world_size())  # the batch split over this run's processes

    def on_train_start(self) -> None:
        for logger in self.loggers:
            # Its own top-level key: loggers (W&B) replace a top-level key on each update, and
            # the resolved config's `grpo` block is logged too.
            logger.log_hyperparams({"grpo_conventions": self.conventions()})

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(
            self.model,
            total_steps=int(self.trainer.max_steps),
            matrices=self.matrix_parameters,
            **self.optim,
        )
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        timings: dict[str, float] = {}
        step = self._collect_rollout(timings)
        # The engine's pass context (speed only: same numbers, medrl.rollout.engine).
        with self.engine.passes(self.model, self.reference):
            with timed(timings, "reference"):
                ref_logp = self._reference_logprobs(step.rollout)
            with timed(timings, "update"):
                update_metrics = self._update(step, ref_logp, timings)
        self.rollout_step += 1
        facts = rollout_facts(step, self.output_format)
        metrics = {**rollout_metrics(facts, self.rewards.names, self.G), **update_metrics}
        metrics.update({f"time/{k}": v for k, v in timings.items()})
        # Time is per process (rank zero's is logged): so are its tokens.
        tokens = sum(step.rollout.num_tokens)
        metrics["time/generated_tokens_per_s"] = tokens / max(timings["generate"], 1e-9)
        metrics["rollout/step"] = float(self.rollout_step)
        total = metrics.pop("reward/total")
        self.log_dict(metrics, batch_size=len(step.rollout))
        self.log("reward/total", total, prog_bar=True, batch_size=len(step.rollout))
        if self.sample_table_every and (self.rollout_step - 1) % self.sample_table_every == 0:
            log_sample_table(
                step, self.rewards.names, self.rollout_step, self.loggers, self.samples_file
            )

    # --- rollout ---------------------------------------------------------------------------

    def _collect_rollout(self, timings: dict[str, float]) -> RolloutBatch:
        step = self._sample_and_reward(self._draw_prompts(), timings)
        if not self.dynamic_sampling.enabled:
            return step
        kept, draws = _groups_with_signal(step), 0
        while len(kept) < self.B and draws < self.dynamic_sampling.max_extra_draws:
            kept += _groups_with_signal(self._sample_and_reward(self._draw_prompts(), timings))
            draws += 1
        # Nothing with signal even after the extra draws: train on the first draw (its
        # advantages are 0, so the update only moves the KL term) and let the metrics show it.
        merged = (
            _merge_groups(kept[: self.B], self.G, self.tokenizer.pad_token_id) if kept else step
        )
        merged.extra_draws = draws
        return merged

    def _draw_prompts(self) -> list[tuple[int, QARecord]]:
        """This rank's share of the next B prompts: every rank draws the same B (the order is
        seeded) and keeps a contiguous slice of B / world_size, whole groups on one rank."""
        drawn = self.sampler.take_indexed(self.B)
        per_rank = self.B // distributed.world_size()
        start = distributed.rank() * per_rank
        return drawn[start : start + per_rank]

    def _sample_and_reward(
        self, drawn: list[tuple[int, QARecord]], timings: dict[str, float]
    ) -> RolloutBatch:
        """G completions of each drawn prompt, their rewards and advantages."""
        records = [record for _, record in drawn]
        # Per-prompt random streams (medrl's sampler): a prompt's samples depend on the run seed
        # and its draw index only, not on the rank or the batch it lands in.
        seeds = None
        if self.engine_settings.sampler == "medrl":
            seeds = [prompt_seed(self.seed, index) for index, _ in drawn]
        prompts = [
            render_prompt(
                self.tokenizer, build_messages(r, self.output_format), self.chat_template_kwargs
            )
            for r in records
        ]
        with timed(timings, "generate"):
            rollout = self.engine.generate(
                self.model,
                self.tokenizer,
                prompts,
                self.sampling,
                num_samples=self.G,
                timings=timings,
                prompt_seeds=seeds,
            )
        with timed(timings, "score"):  # judge rewards: all completions at once (time/judge)
            samples = [
                RewardSample(records[g], self.output_format, n)
                for g, n in zip(rollout.group_index, rollout.num_tokens, strict=True)
            ]
            scores = self.rewards.score_many(rollout.texts, samples, timings)
        rewards = torch.tensor([s.total for s in scores]).view(len(records), self.G)  # [b, G]
        components = torch.tensor(
            [[s.components[name] for name in self.rewards.names] for s in scores],
            dtype=torch.float64,
        ).view(len(records), self.G, -1)  # [b, G, K]
        return RolloutBatch(
            records,
            rollout,
            rewards,
            self._advantages(rewards, components),
            [s.components for s in scores],
            [s.judge_failures for s in scores],
        )

    def _advantages(self, rewards: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
        """adv [b*G] of this rank's rewards [b, G] (components [b, G, K]), computed on all ranks'
        [B, G] (the batch std of std_scope=batch and of batch_renormalize is the whole batch's)."""
        parts = distributed.all_gather_objects((rewards, components))
        adv = rollout_advantages(
            torch.cat([r for r, _ in parts]),
            torch.cat([c for _, c in parts]),
            self._reward_weights(),
            self.advantage,
        )  # [B, G]
        start = sum(len(r) for r, _ in parts[: distributed.rank()])
        return adv[start : start + len(rewards)].reshape(-1)  # [b*G]

    # --- log-probs -------------------------------------------------------------------------

    def _reference_logprobs(self, rollout: Rollout) -> torch.Tensor | None:
        if self.kl.beta == 0:
            return None
        context = (
            self.model.disable_adapter() if self.reference is None else contextlib.nullcontext()
        )
        model = self.model if self.reference is None else self.reference
        with torch.no_grad(), context, eval_mode(model):
            return torch.cat(
                [self._logprobs(model, rollout, rows) for rows in self._micro_batches(len(rollout))]
            )

    def _logprobs(
        self,
        model: nn.Module,
        rollout: Rollout,
        rows: slice,
        entropy: bool = False,
        entropy_grad: bool = False,
    ):
        return self.engine.logprobs(
            model,
            rollout,
            rows,
            self.sampling.temperature,
            entropy=entropy,
            entropy_grad=entropy_grad,
        )

    def _micro_batches(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.micro_batch_size):
            yield slice(start, min(start + self.micro_batch_size, n))

    # --- update ----------------------------------------------------------------------------

    def _update(
        self, step: RolloutBatch, ref_logp: torch.Tensor | None, timings: dict[str, float]
    ) -> dict[str, float]:
        """mu passes over the rollout; timings gets old_logprobs (mu > 1), policy_forward
        (log-probs with gradients and the loss), policy_backward and optimizer (clipping, step,
        scheduler) seconds. Metrics are over the whole batch of all ranks: token means weighted
        by tokens, loss terms summed (each micro-batch's is its share of the batch's loss)."""
        rollout = step.rollout
        mask = self._loss_mask(rollout)  # [N, C]
        # Every pass runs in eval mode: dropout off, so the same weights give the same log-probs
        # in the rollout, reference, old and policy passes (gradients flow all the same).
        self.model.eval()
        old_logp, old_entropy = self._sampling_policy_pass(rollout, timings)
        pg_mask = None
        if self.entropy.top_quantile is not None:
            pg_mask = self._high_entropy_tokens(old_entropy, mask)  # [N, C]
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        # The whole batch's counts normalize every rank's loss (core.aggregate_loss).
        counts = distributed.all_reduce_sum(
            torch.tensor([len(rollout), mask.sum().item()], dtype=torch.float64)
        )
        totals = dict(total_sequences=int(counts[0]), total_tokens=int(counts[1]))
        sums: Counter[str] = Counter()
        for update in range(self.mu):
            optimizer.zero_grad()
            local: Counter[str] = Counter()
            for rows in self._micro_batches(len(rollout)):
                self.engine.before_micro_batch()  # e.g. the last one's freed heap, to the OS
                self.start_micro_batch()  # DeepSpeed: this backward adds to the update
                with timed(timings, "policy_forward"):
                    loss, metrics, entropy = self._micro_batch_loss(
                        step, rows, old_logp, ref_logp, mask, totals, pg_mask
                    )
                with timed(timings, "policy_backward"):
                    # The strategy averages gradients over ranks: scaled by world_size, the
                    # average is the gradient of the sum of the ranks' shares, the batch loss.
                    self.manual_backward(loss * distributed.world_size())
                local.update(metric_sums(metrics, tokens=float(mask[rows].sum())))
                local["loss"] += loss.item()
                # Over the loss tokens, as the denominator (mask_truncated drops some tokens).
                token_entropy = (entropy.detach() * mask[rows].to(entropy.device)).sum().item()
                local["entropy"] += token_entropy / max(totals["total_tokens"], 1)
            batch = batch_metrics(local, totals["total_tokens"])
            with timed(timings, "optimizer"):
                grad_norm = self._optimizer_step(optimizer, scheduler, batch["loss"], update)
            sums.update(batch)
            sums["grad_norm"] += grad_norm
        train = {k: sums.pop(k) / self.mu for k in ("entropy", "grad_norm")}
        metrics = {f"loss/{k}": v / self.mu for k, v in sums.items()}
        metrics.update({f"train/{k}": v for k, v in train.items()})
        metrics["faults/skipped_updates"] = float(self.faults.total)
        return metrics

    def _sampling_policy_pass(
        self, rollout: Rollout, timings: dict[str, float]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(old_logp [N, C] when mu > 1, entropies [N, C] when entropy.top_quantile is set) of
        the policy that sampled the rollout, before any update of this step; one no-grad pass,
        or none when neither is needed (mu = 1: the old log-probs are the current ones)."""
        need_entropy = self.entropy.top_quantile is not None
        if self.mu == 1 and not need_entropy:
            return None, None
        with torch.no_grad(), timed(timings, "old_logprobs"):
            parts = [
                self._logprobs(self.model, rollout, rows, entropy=need_entropy)
                for rows in self._micro_batches(len(rollout))
            ]
        if not need_entropy:
            return torch.cat(parts), None
        old_logp = torch.cat([logp for logp, _ in parts]) if self.mu > 1 else None
        return old_logp, torch.cat([entropy for _, entropy in parts])

    def _high_entropy_tokens(self, entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pg_mask [N, C]: 1 on the loss tokens whose entropy is in the top entropy.top_quantile
        of every loss token of the rollout, on all ranks (core.high_entropy_threshold)."""
        entropy = entropy.cpu()
        values = entropy[mask.bool()]  # [T] this rank's loss tokens
        every = torch.cat(distributed.all_gather_objects(values))  # [T of all ranks]
        threshold = high_entropy_threshold(every, self.entropy.top_quantile)
        return high_entropy_mask(entropy, mask, threshold)

    def _micro_batch_loss(
        self,
        step: RolloutBatch,
        rows: slice,
        old_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        mask: torch.Tensor,
        totals: dict[str, int],
        pg_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """(loss, metrics, entropy [n, C]) of micro-batch `rows`; the loss carries gradients."""
        bonus = self.entropy.coef > 0
        logp, entropy = self._logprobs(
            self.model, step.rollout, rows, entropy=True, entropy_grad=bonus
        )
        old = logp.detach() if old_logp is None else old_logp[rows]
        eps_low, eps_high = self._clip_range()
        loss, metrics = grpo_loss(
            logp,
            old,
            None if ref_logp is None else ref_logp[rows],
            step.adv[rows].to(logp.device),
            mask[rows].to(logp.device),
            eps_low=eps_low,
            eps_high=eps_high,
            dual_clip=self.clip.dual_clip,
            beta=self.kl.beta,
            kl_estimator=self.kl.estimator,
            aggregation=self.loss_aggregation,
            max_completion_length=self.sampling.max_new_tokens,
            policy_loss=self.policy_loss,
            importance_sampling=self.importance_sampling,
            entropy=entropy if bonus else None,
            entropy_coef=self.entropy.coef,
            pg_mask=None if pg_mask is None else pg_mask[rows].to(logp.device),
            **totals,
        )
        return loss, metrics, entropy

    def _optimizer_step(self, optimizer, scheduler, batch_loss: float, update: int) -> float:
        """Clip and step, or skip a non-finite update (numeric_faults); the pre-clip norm.

        `batch_loss` is the whole batch's (all ranks), and the gradients are reduced already,
        so every rank takes the same decision. Under DeepSpeed its step does all of it (the
        norm over every partition, clipping to grad_clip, skipping a non-finite norm), and the
        fault is recorded from the norm it reports."""
        where = f"grpo rollout step {self.rollout_step + 1}, update {update + 1}/{self.mu}"
        if self.strategy_steps_update():
            optimizer.step()
            grad_norm = self.stepped_gradient_norm()
            self.faults.record(stepped_update_fault([batch_loss], grad_norm), where)
            scheduler.step()
            return grad_norm
        grad_norm = self.gradient_norm()  # before clipping; over every shard under FSDP
        fault = update_fault([batch_loss], self.model, grad_norm)
        self.faults.record(fault, where)
        if fault is None:
            self.clip_gradient_norm(optimizer, self.grad_clip)
        else:
            drop_gradients(self.model)  # the step below then changes nothing
        optimizer.step()
        scheduler.step()
        return grad_norm

    def strategy_gradient_clip(self) -> float:
        """grad_clip, for DeepSpeed's gradient_clipping (0: no clipping)."""
        return max(self.grad_clip, 0.0)

    def _loss_mask(self, rollout: Rollout) -> torch.Tensor:
        mask = rollout.completion_mask.float()  # [N, C]
        if self.mask_truncated:
            keep = torch.tensor([not t for t in rollout.truncated], dtype=mask.dtype)  # [N]
            mask = mask * keep.unsqueeze(1)
        return mask


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def rollout_advantages(
    rewards: torch.Tensor,
    components: torch.Tensor,
    weights: Sequence[float],
    settings: AdvantageSettings,
) -> torch.Tensor:
    """adv [B, G] of the whole batch's reward totals [B, G] and components [B, G, K] under
    `settings` (the dispatch to core's functions)."""
    options = dict(
        std_scope=settings.std_scope,
        std_estimator=settings.std_estimator,
        eps=settings.eps,
        estimator=settings.estimator,
    )
    if settings.aggregation == "normalize_then_sum":
        adv, _ = decoupled_advantages(components, weights, **options)  # [B, G]
    else:
        adv, _ = group_advantages(rewards, **options)  # [B, G]
    if settings.batch_renormalize:
        adv = batch_renormalize(adv, settings.std_estimator, settings.eps)  # [B, G]
    return adv


def _groups_with_signal(step: RolloutBatch) -> list[tuple[RolloutBatch, int]]:
    return [(step, b) for b in step.groups_with_signal()]


def _merge_groups(groups: list[tuple[RolloutBatch, int]], G: int, pad_id: int) -> RolloutBatch:
    """One RolloutBatch made of whole groups taken from several rollouts (dynamic sampling)."""
    parts = [(step.rollout, range(b * G, (b + 1) * G)) for step, b in groups]
    rollout = merge_rollouts(parts, pad_id)
    rows = [i for step, b in groups for i in range(b * G, (b + 1) * G)]
    steps = [step for step, b in groups for _ in range(G)]
    return RolloutBatch(
        records=[step.records[b] for step, b in groups],
        rollout=rollout,
        rewards=torch.stack([step.rewards[b] for step, b in groups]),
        adv=torch.stack([s.adv[i] for s, i in zip(steps, rows, strict=True)]),
        components=[s.components[i] for s, i in zip(steps, rows, strict=True)],
        judge_failures=[s.judge_failures[i] for s, i in zip(steps, rows, strict=True)],
    )
