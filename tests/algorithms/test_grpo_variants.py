"""Every GRPO variant optimizes what it is given: golden values pin numbers, this pins direction.

The tiny random Qwen3 (tied embeddings) puts most of its next-token mass after the chat
template's last token on one token, "\\n\\n", at a low sampling temperature: at T = 0.08 about
40% of first tokens are that one. The reward pays 1 when a completion starts with a blank line,
so a policy gradient with the right sign raises it within a few steps, and one with the sign
flipped drives it to 0 (checked by hand: with the advantages negated every variant's reward
fell from 0.41 to 0.00-0.06 over the same steps).

Each variant is its conf/grpo/ preset, with mu = 2 so that the importance ratios (token or
sequence), their clipping and CISPO's weights are exercised off-policy, and a second reward
component that is always 0 (GDPO normalizes each component: an equal one must add nothing).
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from hydra.utils import instantiate
from test_grpo import fit  # this folder's GRPO trainer helper

from medrl.data.records import QARecord
from medrl.models import LoraAdapter, load_policy
from medrl.prompts import XmlFormat
from medrl.rewards import RewardSet
from medrl.rewards.composite import RewardComponent

PRESETS = ["standard", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "gdpo"]
STEPS = 12
RECORDS = [
    QARecord(id=f"q{i}", question=f"Question {i}?", options={"A": "a", "B": "b"}, answer="A")
    for i in range(6)
]


def blank_start(completion: str, sample) -> float:
    return 1.0 if completion.startswith("\n\n") else 0.0


def always_zero(completion: str, sample) -> float:
    return 0.0


REWARDS = RewardSet(
    (RewardComponent("blank_start", blank_start, 1.0), RewardComponent("zero", always_zero, 0.5))
)
SETTINGS = [
    "grpo.module.prompts_per_step=4",
    "grpo.module.group_size=8",
    "grpo.module.micro_batch_size=32",
    "grpo.module.mu=2",
    "grpo.module.lr=5e-3",
    "grpo.module.sampling.temperature=0.08",
    "grpo.module.sampling.max_new_tokens=1",
    # One-token completions are all cut at max_new_tokens: DAPO's preset would mask them all.
    "grpo.module.mask_truncated=false",
    "grpo.module.sample_table_every=0",
]


def rewards_per_step(module, steps: int) -> list[float]:
    """Train `steps` rollout steps; the mean reward of each step's rollout, in order."""
    seen: list[float] = []
    log = module.log

    def recording_log(name, value, *args, **kwargs):
        if name == "reward/total":
            seen.append(float(value))
        return log(name, value, *args, **kwargs)

    module.log = recording_log
    fit(module, steps)
    return seen


@pytest.mark.parametrize("preset", PRESETS)
def test_each_variant_raises_a_learnable_reward(compose, tiny_spec, preset):
    cfg = compose("train", ["model=tiny_qwen3", f"grpo={preset}", *SETTINGS])
    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    module = instantiate(cfg.grpo.module)(
        model=policy.model,
        tokenizer=policy.tokenizer,
        prompts=RECORDS,
        rewards=REWARDS,
        output_format=XmlFormat(),
        chat_template_kwargs=policy.chat_template_kwargs,
        seed=0,
    )
    rewards = rewards_per_step(module, STEPS)
    assert len(rewards) == STEPS
    first, last = sum(rewards[:2]) / 2, sum(rewards[-4:]) / 4
    assert last > first + 0.1, f"{preset}: reward per step {[round(r, 2) for r in rewards]}"
