"""Pieces every worker builds the same way, whichever system it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate

from medrl.bench.instrument import PhaseClock
from medrl.prompts import build_messages, render_prompt
from medrl.rewards import RewardBreakdown, RewardSample, RewardSet


def precision_autocast(cfg: Any) -> Any:
    """The compute `cfg.precision` names, for code that runs outside a Trainer (rollouts):
    bf16-mixed autocasts to bfloat16 as Lightning's precision plugin and TRL's bf16=True do."""
    import torch

    device_type = "cuda" if cfg.device == "cuda" else "cpu"
    return torch.autocast(device_type, torch.bfloat16, enabled=cfg.precision == "bf16-mixed")


def model_spec(cfg: Any) -> Any:
    """The model group's spec with the bench's dtype (both systems load these weights)."""
    spec = instantiate(cfg.model)
    spec.dtype = str(cfg.dtype)
    return spec


def render_prompts(tokenizer: Any, records: list, output_format: Any, chat_kwargs: dict) -> list:
    """The prompts exactly as GRPOModule renders them (medrl.prompts.render_prompt)."""
    return [
        render_prompt(tokenizer, build_messages(r, output_format), chat_kwargs) for r in records
    ]


@dataclass(frozen=True)
class TimedRewardSet(RewardSet):
    """medrl's reward set, each score timed as the `reward` phase of the clock's step."""

    clock: PhaseClock | None = None

    def score(self, completion: str, sample: RewardSample) -> RewardBreakdown:
        if self.clock is None:
            return super().score(completion, sample)
        with self.clock.phase("reward"):
            return super().score(completion, sample)


def timed_rewards(cfg: Any, clock: PhaseClock) -> TimedRewardSet:
    return TimedRewardSet(instantiate(cfg.reward).components, clock=clock)


def check_same_prompts(expected: list[str], rendered: list[str], system: str) -> None:
    """Both systems must be given the same strings; stop if a worker renders others."""
    if list(expected) != list(rendered):
        raise RuntimeError(f"{system}: the rendered prompts differ from the bench's prompts")


def sft_examples(records: list, cfg: Any, tokenizer: Any, chat_kwargs: dict) -> list:
    """medrl's SFT examples (prompt masked, assistant tokens trained) for `records`; both
    systems train on exactly these token ids and loss masks."""
    from medrl.algorithms.sft_batches import encode_sft_example

    output_format = instantiate(cfg.format)
    return [
        encode_sft_example(tokenizer, r, output_format, chat_kwargs, int(cfg.sft.max_seq_length))
        for r in records
    ]
