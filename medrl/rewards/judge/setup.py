"""The `judge` config group as one object: the endpoint settings plus how a run uses them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrl import distributed
from medrl.rewards.judge.cache import JudgeCache
from medrl.rewards.judge.client import JudgeClient, JudgeSettings
from medrl.rewards.judge.reward import ON_FAILURE, JudgeReward
from medrl.rewards.judge.rubrics import load_rubric
from medrl.utils.config import defaults_from_config

PREFLIGHT = ("fail", "warn", "off")
RUBRICS_DIR = Path(__file__).with_name("rubrics")  # the shipped rubric files
# reward name -> its default rubric file under medrl/rewards/judge/rubrics/
JUDGE_REWARDS = {
    "judge_correctness": "correctness",
    "judge_faithfulness": "faithfulness",
    "judge_relevancy": "relevancy",
}


def shipped_rubric(name: str) -> Path:
    """The rubric file medrl ships under `name` (medrl/rewards/judge/rubrics/<name>.yaml)."""
    return RUBRICS_DIR / f"{name}.yaml"


@dataclass(frozen=True)
@defaults_from_config("judge/local", keep=("settings", "cache_file"))
class JudgeSetup:
    """settings: the endpoint (`JudgeSettings`). on_failure: batch_mean | zero | raise (see
    medrl/rewards/judge/reward.py). cache_file: the run folder's verdict cache (null: memory
    only). preflight: what preflight's judge check does when the gold reference does not score
    above a wrong answer on the pool's first records: fail | warn | off."""

    # Defaults: conf/judge/local.yaml's (cache_file's there is the run folder's, an
    # interpolation; here null).
    settings: JudgeSettings
    on_failure: str
    cache_file: str | None = None
    preflight: str

    def __post_init__(self) -> None:
        if self.on_failure not in ON_FAILURE:
            raise ValueError(
                f"judge.on_failure must be one of {ON_FAILURE}, got {self.on_failure!r}"
            )
        if self.preflight not in PREFLIGHT:
            raise ValueError(f"judge.preflight must be one of {PREFLIGHT}, got {self.preflight!r}")

    def client(self) -> JudgeClient:
        """A client whose cache is this process's file (medrl.distributed.rank)."""
        return JudgeClient(self.settings, JudgeCache(self.cache_file, distributed.rank()))

    def reward(self, name: str, client: JudgeClient, rubric: str | None = None) -> JudgeReward:
        """The judge reward `name` (JUDGE_REWARDS) with its rubric file (default
        medrl/rewards/judge/rubrics/<rubric>.yaml)."""
        path = rubric or shipped_rubric(JUDGE_REWARDS[name])
        return JudgeReward(load_rubric(path), client, self.on_failure)
