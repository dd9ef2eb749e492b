"""LLM-judge scoring through an OpenAI-compatible endpoint: rubrics, the concurrent client,
the score parser and the run-folder cache (the judge rewards are built on these)."""

from medrl.rewards.judge.cache import JudgeCache, cache_key
from medrl.rewards.judge.client import JudgeClient, JudgeRequest, JudgeSettings, Verdict
from medrl.rewards.judge.reward import JudgedBatch, JudgeFailureError, JudgeReward
from medrl.rewards.judge.rubrics import (
    Example,
    Rubric,
    load_rubric,
    parse_score,
    render_judge_messages,
)
from medrl.rewards.judge.setup import JUDGE_REWARDS, JudgeSetup

__all__ = [
    "JUDGE_REWARDS",
    "JudgeFailureError",
    "JudgeReward",
    "JudgeSetup",
    "JudgedBatch",
    "Example",
    "JudgeCache",
    "JudgeClient",
    "JudgeRequest",
    "JudgeSettings",
    "Rubric",
    "Verdict",
    "cache_key",
    "load_rubric",
    "parse_score",
    "render_judge_messages",
]
