"""The phase clock attributes calls to the right phases (no timing assertions: only which
phases were hit, how often, and the token counters)."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from medrl.bench.instrument import (
    PhaseClock,
    step_phases,
    time_calls,
    time_generation,
    time_logprob_passes,
    time_optimizer_steps,
)

EOS, PAD = 9, 0


class FakeLM(nn.Module):
    """generate = a prefill forward, then one forward per new token; the rows end with eos
    after 1 and 3 tokens (then pad)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, input_ids, logits_to_keep=0):
        self.calls += 1
        return input_ids.float() * self.weight

    def generate(self, input_ids, **kwargs):
        for _ in range(4):
            self(input_ids)
        new = torch.tensor([[EOS, PAD, PAD, PAD], [5, 6, EOS, PAD]])  # [N, C]
        return torch.cat([input_ids, new], dim=1)

    def logprobs(self, x):
        return self(x).sum()


def test_generation_splits_prefill_and_counts_completion_tokens():
    clock, lm = PhaseClock(), FakeLM()
    time_generation(clock, lm, lm, eos_ids=[EOS])
    assert "logits_to_keep" in inspect.signature(lm.forward).parameters  # generate checks it
    clock.begin_step()
    lm.generate(input_ids=torch.ones(2, 3, dtype=torch.long))
    lm(torch.ones(1, 1, dtype=torch.long))  # outside generate: not prefill
    record = clock.end_step()
    assert lm.calls == 5 and clock.generate_forwards == 4
    assert record.counters == {
        "completion_tokens": 4.0,  # 1 + 3, eos included, pad after it not counted
        "rows": 2.0,
        "decode_width": 4.0,
        "prompt_width": 3.0,
    }
    assert record.phases["prefill"] > 0 and record.phases["generate"] >= record.phases["prefill"]


def test_logprob_passes_backward_and_optimizer_land_in_their_phases():
    clock, lm = PhaseClock(warmup=1), FakeLM()
    time_logprob_passes(clock, lm, "logprobs")
    backward = nn.Module()
    backward.run = lambda loss: loss.backward()
    time_calls(clock, backward, "run", "policy_backward")
    optimizer = torch.optim.AdamW(lm.parameters(), lr=0.1)
    with time_optimizer_steps(clock):
        for _ in range(2):
            clock.begin_step()
            with torch.no_grad():
                lm.logprobs(torch.ones(2, 2))
            backward.run(lm.logprobs(torch.ones(2, 2)))
            optimizer.step()
            clock.end_step()
    first, second = clock.steps
    assert (first.measured, second.measured) == (False, True)
    for phase in ("ref_logprobs", "policy_forward", "policy_backward", "optimizer"):
        assert second.phases[phase] > 0, phase
    optimizer.step()  # after the context: no hook left behind, and no step to add to
    assert len(clock.steps) == 2


def test_decode_is_generate_minus_prefill_and_other_is_the_rest():
    phases = step_phases(10.0, {"generate": 4.0, "prefill": 1.0, "reward": 0.5, "optimizer": 1.5})
    assert phases["decode"] == 3.0
    assert phases["other"] == 10.0 - (1.0 + 3.0 + 0.5 + 1.5)
    assert phases["policy_forward"] == 0.0 and phases["generate"] == 4.0
