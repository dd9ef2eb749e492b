"""Pure reward functions, their registry, and the weighted composite a reward yaml builds."""

from medrl.rewards.base import RewardFn, RewardSample
from medrl.rewards.composite import (
    RewardBreakdown,
    RewardComponent,
    RewardSet,
    build_reward_set,
    judge_failure_metrics,
)
from medrl.rewards.functions import (
    brevity,
    correctness,
    explanation_length,
    format_reward,
    json_schema,
    json_valid,
    reasoning_tags,
    rouge_l,
    token_efficiency,
    token_f1,
)
from medrl.rewards.registry import REWARDS, get_reward

__all__ = [
    "REWARDS",
    "RewardBreakdown",
    "RewardComponent",
    "RewardFn",
    "RewardSample",
    "RewardSet",
    "brevity",
    "build_reward_set",
    "correctness",
    "explanation_length",
    "format_reward",
    "get_reward",
    "judge_failure_metrics",
    "json_schema",
    "json_valid",
    "reasoning_tags",
    "rouge_l",
    "token_efficiency",
    "token_f1",
]
