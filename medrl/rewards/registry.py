"""Reward functions by name: the names reward yamls and `build_reward_set` use."""

from __future__ import annotations

from collections.abc import Callable

from medrl.rewards import functions as fn
from medrl.rewards.base import RewardFn
from medrl.rewards.judge.setup import JUDGE_REWARDS

REWARDS: dict[str, RewardFn] = {
    "correctness": fn.correctness,
    "format": fn.format_reward,
    "json_valid": fn.json_valid,
    "json_schema": fn.json_schema,
    "explanation_length": fn.explanation_length,
    "reasoning_tags": fn.reasoning_tags,
    "brevity": fn.brevity,
    "token_efficiency": fn.token_efficiency,
    "token_f1": fn.token_f1,
    "rouge_l": fn.rouge_l,
}

# Parameter checks run once when a reward set is built, so a bad yaml value fails before any
# model is loaded; they receive every parameter, defaults filled in.
PARAM_CHECKS: dict[str, Callable[..., None]] = {
    "explanation_length": fn.check_explanation_length_params,
    "brevity": fn.check_brevity_params,
    "token_efficiency": fn.check_brevity_params,
}


def get_reward(name: str) -> RewardFn:
    """The reward function registered as `name`; ValueError listing valid names otherwise."""
    try:
        return REWARDS[name]
    except KeyError:
        valid = sorted([*REWARDS, *JUDGE_REWARDS])
        raise ValueError(f"unknown reward {name!r}; valid names: {valid}") from None
