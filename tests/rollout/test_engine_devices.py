"""The engine built for a device computes what the straightforward engine computes there.

Runs on the devices in MEDRL_TEST_DEVICES (comma-separated; default "cpu"): `make gpu-check`
runs this file with "cpu,cuda" on a GPU machine, so each device's own choice of pieces (the CPU
pieces on a CPU; transformers' path plus the device-independent pieces on CUDA) is checked
against the plain path on that device: greedy samples, merged-adapter samples, log-probs,
entropies and their gradients.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from peft import LoraConfig, get_peft_model

from medrl.rollout import EngineSettings, RolloutEngine, SamplingSettings

DEVICES = [d.strip() for d in os.environ.get("MEDRL_TEST_DEVICES", "cpu").split(",") if d.strip()]
PROMPTS = [
    "Which vitamin deficiency causes scurvy?",
    "A",
    "Name the nerve that supplies the deltoid muscle and the skin over it.",
]
GREEDY = SamplingSettings(greedy=True, max_new_tokens=6)
SAMPLE = SamplingSettings(temperature=1.0, max_new_tokens=6)


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    return torch.device(request.param)


@pytest.fixture
def lora_model(tiny_policy, device):
    """A float32 LoRA copy of the tiny model on `device`, with random B (the adapter acts)."""
    torch.manual_seed(0)
    base = copy.deepcopy(tiny_policy.model).to(device)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    return get_peft_model(base, config).eval()


def test_greedy_samples_of_the_device_engine_equal_transformers_generate(
    tiny_policy, lora_model, device
):
    tok = tiny_policy.tokenizer
    fast = RolloutEngine(EngineSettings(), device)
    plain = RolloutEngine.straightforward(device)
    ours = fast.generate(lora_model, tok, PROMPTS, GREEDY, num_samples=2)
    theirs = plain.generate(lora_model, tok, PROMPTS, GREEDY, num_samples=2)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert ours.texts == theirs.texts


def test_logprobs_entropies_and_gradients_of_the_device_engine_equal_the_plain_ones(
    tiny_policy, lora_model, device
):
    tok = tiny_policy.tokenizer
    fast = RolloutEngine(EngineSettings(), device)
    plain = RolloutEngine.straightforward(device)
    rollout = fast.generate(lora_model, tok, PROMPTS, SAMPLE, num_samples=3, prompt_seeds=[1, 2, 3])
    weights = torch.linspace(-1, 1, rollout.completion_ids.numel(), device=device)
    weights = weights.view(rollout.completion_ids.shape)

    def run(engine: RolloutEngine):
        lora_model.zero_grad(set_to_none=True)
        with engine.passes(lora_model):
            logp, entropy = engine.logprobs(
                lora_model, rollout, slice(None), 0.7, entropy=True, entropy_grad=True
            )
            ((logp + 0.1 * entropy) * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in lora_model.named_parameters() if p.requires_grad}
        return logp.detach(), entropy.detach(), grads

    fast_logp, fast_entropy, fast_grads = run(fast)
    plain_logp, plain_entropy, plain_grads = run(plain)
    torch.testing.assert_close(fast_logp, plain_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_entropy, plain_entropy, atol=1e-4, rtol=0)
    assert fast_grads.keys() == plain_grads.keys() and fast_grads
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], atol=1e-5, rtol=1e-4)
    lora_model.zero_grad(set_to_none=True)
