"""What GRPO logs: rollout metrics over all ranks, the update's metric sums, sample tables.

The GRPO loop (medrl.algorithms.grpo) hands over its RolloutBatch and update sums; every number
here is computed over the whole batch of all processes, identically on each rank.

Rollout metrics (B groups of G completions, N = B*G):
- reward/total, reward/<component> (+ _std, population), reward/<component>_frac_zero_std
  (groups where that component alone is equal), reward/parse_fail, judge failure rates;
- adv/mean, std, min, max;
- rollout/frac_zero_std (groups whose reward totals are equal), split into all-correct and
  all-wrong groups; rollout/frac_zero_adv (groups with no advantage signal at all), lengths,
  truncation, extra draws, predicted_<label> shares.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medrl import distributed
from medrl.prompts.base import OutputFormat
from medrl.rewards import judge_failure_metrics

if TYPE_CHECKING:
    from medrl.algorithms.grpo import RolloutBatch


@dataclass
class RolloutFacts:
    """What the rollout metrics need: small, so ranks can exchange it every step."""

    rewards: torch.Tensor  # [b, G] totals
    adv: torch.Tensor  # [N]
    zero_std: torch.Tensor  # [b] bool, RolloutBatch.zero_std
    signal: torch.Tensor  # [b] bool, RolloutBatch.signal
    components: list[dict[str, float]]  # N
    judge_failures: list[dict[str, str | None]]  # N
    answers: list[str | None]  # N parsed answers (None: did not parse)
    format_ok: list[bool]  # N completions in the output format
    correct: list[bool]  # N
    num_tokens: list[int]  # N
    truncated: list[bool]  # N
    labels: list[str]  # the answer labels of the records (for predicted_<label>)
    extra_draws: int = 0

    @staticmethod
    def concatenate(parts: Sequence[RolloutFacts]) -> RolloutFacts:
        """The facts of all ranks as one batch, in rank order."""
        return RolloutFacts(
            rewards=torch.cat([p.rewards for p in parts]),
            adv=torch.cat([p.adv for p in parts]),
            zero_std=torch.cat([p.zero_std for p in parts]),
            signal=torch.cat([p.signal for p in parts]),
            components=[c for p in parts for c in p.components],
            judge_failures=[f for p in parts for f in p.judge_failures],
            answers=[a for p in parts for a in p.answers],
            format_ok=[f for p in parts for f in p.format_ok],
            correct=[c for p in parts for c in p.correct],
            num_tokens=[n for p in parts for n in p.num_tokens],
            truncated=[t for p in parts for t in p.truncated],
            labels=parts[0].labels,
            extra_draws=max(p.extra_draws for p in parts),
        )


def rollout_facts(step: RolloutBatch, output_format: OutputFormat) -> RolloutFacts:
    """This rank's facts about its rollout, gathered with the other ranks' into one batch."""
    parsed = [
        output_format.parse(text, step.records[g].labels)
        for text, g in zip(step.rollout.texts, step.rollout.group_index, strict=True)
    ]
    golds = [step.records[g].answer for g in step.rollout.group_index]
    correct = [
        p.answer is not None and p.answer == gold for p, gold in zip(parsed, golds, strict=True)
    ]
    local = RolloutFacts(
        rewards=step.rewards,
        adv=step.adv,
        zero_std=step.zero_std,
        signal=step.signal,
        components=step.components,
        judge_failures=step.judge_failures,
        answers=[p.answer for p in parsed],
        format_ok=[p.format_ok for p in parsed],
        correct=correct,
        num_tokens=list(step.rollout.num_tokens),
        truncated=list(step.rollout.truncated),
        labels=list(step.records[0].labels),
        extra_draws=step.extra_draws,
    )
    return RolloutFacts.concatenate(distributed.all_gather_objects(local))


def rollout_metrics(facts: RolloutFacts, reward_names: Sequence[str], G: int) -> dict[str, float]:
    """The rollout metrics of the module docstring, from the facts of all ranks."""
    totals = facts.rewards.view(-1)  # [N]
    n = len(facts.answers)
    metrics = {
        "reward/total": totals.mean().item(),
        "reward/total_std": totals.std(correction=0).item(),
        "reward/parse_fail": sum(not ok for ok in facts.format_ok) / n,
        **judge_failure_metrics(facts.judge_failures),
        "adv/mean": facts.adv.mean().item(),
        "adv/std": facts.adv.std(correction=0).item(),
        "adv/min": facts.adv.min().item(),
        "adv/max": facts.adv.max().item(),
    }
    for name in reward_names:
        values = torch.tensor([c[name] for c in facts.components])  # [N]
        metrics[f"reward/{name}"] = values.mean().item()
        metrics[f"reward/{name}_std"] = values.std(correction=0).item()
        groups = values.view(-1, G)  # [B, G]
        equal = groups.max(1).values == groups.min(1).values  # [B] no signal from this one
        metrics[f"reward/{name}_frac_zero_std"] = equal.float().mean().item()
    correct = torch.tensor(facts.correct).view(-1, G)  # [B, G]
    zero_std = facts.zero_std  # [B]
    lengths = torch.tensor(facts.num_tokens, dtype=torch.float)  # [N]
    metrics.update(
        {
            "rollout/frac_zero_std": _share(zero_std),
            "rollout/frac_zero_std_all_correct": _share(zero_std & correct.all(1)),
            "rollout/frac_zero_std_all_wrong": _share(zero_std & ~correct.any(1)),
            "rollout/frac_zero_adv": _share(~facts.signal),
            "rollout/completions": float(n),
            "rollout/completion_tokens": lengths.sum().item(),
            "rollout/completion_len_mean": lengths.mean().item(),
            "rollout/completion_len_min": lengths.min().item(),
            "rollout/completion_len_max": lengths.max().item(),
            "rollout/frac_truncated": sum(facts.truncated) / n,
            "rollout/extra_draws": float(facts.extra_draws),
        }
    )
    answers = Counter(a if a is not None else "none" for a in facts.answers)
    metrics.update({f"rollout/predicted_{a}": answers[a] / n for a in [*facts.labels, "none"]})
    return metrics


def _share(flags: torch.Tensor) -> float:
    """The fraction of True in a bool tensor."""
    return flags.float().mean().item()


# grpo_loss metrics that are means over the micro-batch's completion tokens; the others
# (pg_loss) are the micro-batch's share of the batch's value, already normalized by its totals.
TOKEN_MEAN_METRICS = (
    "kl",
    "ratio_mean",
    "clip_frac_low",
    "clip_frac_high",
    "dual_clip_frac",
    "pg_token_frac",
)


def metric_sums(metrics: dict[str, float], tokens: float) -> dict[str, float]:
    """A micro-batch's metrics as sums: token means times its tokens, shares as they are."""
    return {k: v * tokens if k in TOKEN_MEAN_METRICS else v for k, v in metrics.items()}


def batch_metrics(sums: Counter[str], total_tokens: int) -> dict[str, float]:
    """One update's metric sums of this rank -> the whole batch's metrics (token means
    divided by the batch's tokens, shares summed over ranks), identical on every rank."""
    keys = sorted(sums)
    reduced = distributed.all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
    values = dict(zip(keys, reduced.tolist(), strict=True))
    return {
        k: v / max(total_tokens, 1) if k in TOKEN_MEAN_METRICS else v for k, v in values.items()
    }


def log_sample_table(
    step: RolloutBatch,
    reward_names: Sequence[str],
    rollout_step: int,
    loggers: Sequence[Any],
    samples_file: Path | None,
) -> None:
    """The step's completions (all ranks') with their rewards, as a table for loggers that take
    one (W&B) and as lines of `samples_file`, written by rank zero."""
    columns = ["rollout_step", "id", "question", "completion", "total", *reward_names]
    totals = step.rewards.view(-1).tolist()
    rows = [
        [
            rollout_step,
            step.records[g].id,
            step.records[g].question,
            text,
            totals[i],
            *[step.components[i][name] for name in reward_names],
        ]
        for i, (text, g) in enumerate(
            zip(step.rollout.texts, step.rollout.group_index, strict=True)
        )
    ]
    rows = [row for part in distributed.all_gather_objects(rows) for row in part]
    if not distributed.is_rank_zero():
        return
    for logger in loggers:
        if hasattr(logger, "log_text"):
            logger.log_text(key="samples", columns=columns, data=rows)
    if samples_file is not None:
        samples_file.parent.mkdir(parents=True, exist_ok=True)
        with samples_file.open("a") as handle:
            handle.writelines(
                json.dumps(dict(zip(columns, row, strict=True))) + "\n" for row in rows
            )
