"""The entropy a log-prob pass reports, by hand."""

import math

import torch

from medrl.rollout.logprobs import token_entropy


def test_entropy_of_uniform_and_one_hot_distributions():
    # Uniform over 4 tokens: log 4; one logit 100 above the rest: 0 to float32 precision.
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(
        token_entropy(logits), torch.tensor([math.log(4), 0.0]), rtol=1e-6, atol=1e-6
    )
