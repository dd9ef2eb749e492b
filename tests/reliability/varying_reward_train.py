"""`python -m medrl.train` with one extra reward, "distinct", registered: the share of distinct
characters in a completion. A tiny random model scores 0 on every real reward, which leaves
GRPO's advantages at 0 and its updates empty; this reward varies, so the weights move.

Usage (as the resume tests do): python tests/reliability/varying_reward_train.py [overrides]
with `~reward.components.<name>` and `+reward.components.distinct.weight=1.0`.
"""

from medrl.rewards import REWARDS
from medrl.train import main


def distinct_characters(completion: str, sample) -> float:
    return len(set(completion)) / 32


if __name__ == "__main__":
    REWARDS["distinct"] = distinct_characters
    main()
