"""engine.decode=static / compiled: every row runs every step in a fixed-capacity cache, and
the rollouts are those of the default (dynamic) loop: greedy tokens identical, sampled tokens
identical under the same per-prompt seeds (the same draws on logits equal to float rounding),
rows that end padded after their eos."""

from __future__ import annotations

import pytest
import torch

from medrl.rollout import EngineSettings, SamplingSettings, encode_prompts, generate, left_pad
from medrl.rollout.decoding import decode
from medrl.rollout.static_decode import StaticDecoder, bucketed_capacity

PROMPTS = [
    "Which vitamin deficiency causes scurvy?",
    "A",
    "Name the nerve that supplies the deltoid muscle and the skin over it.",
]
GREEDY = SamplingSettings(greedy=True, max_new_tokens=12)
SAMPLE = SamplingSettings(temperature=1.0, max_new_tokens=12)
DYNAMIC = EngineSettings(decode="dynamic")
STATIC = EngineSettings(decode="static")


def test_capacity_is_rounded_up_to_the_bucket():
    assert bucketed_capacity(100, 28) == 128
    assert bucketed_capacity(100, 29) == 192
    assert bucketed_capacity(1, 1, step=8) == 8


def test_static_greedy_decoding_gives_the_dynamic_loops_tokens(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    ours = generate(model, tok, PROMPTS, GREEDY, num_samples=2, engine=STATIC)
    theirs = generate(model, tok, PROMPTS, GREEDY, num_samples=2, engine=DYNAMIC)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert torch.equal(ours.completion_mask, theirs.completion_mask)
    assert ours.texts == theirs.texts


def decode_rows(policy, settings, eos, static, decoder=None):
    """Raw decode of PROMPTS x 4 samples under per-prompt seeds: dynamic, static, or through
    `decoder` (a StaticDecoder, compiled or not)."""
    tok = policy.tokenizer
    ids, mask = left_pad(encode_prompts(tok, PROMPTS), tok.pad_token_id)
    with torch.no_grad():
        return decode(
            policy.model.eval(),
            ids,
            mask,
            4,
            settings,
            eos,
            tok.pad_token_id,
            prompt_seeds=[11, 12, 13],
            static_decoder=decoder or (StaticDecoder(compile=False) if static else None),
        )


@pytest.mark.parametrize("settings", [GREEDY, SAMPLE], ids=["greedy", "sampled"])
def test_rows_that_end_early_keep_running_masked_and_change_nothing(tiny_policy, settings):
    tok = tiny_policy.tokenizer
    first = decode_rows(tiny_policy, settings, [tok.eos_token_id], static=False)
    # a token some rows emit early and others never: as an eos it ends rows at different steps
    stop = next(t for t in first[:, 1:4].flatten().tolist() if not (first == t).any(dim=1).all())
    eos = [tok.eos_token_id, stop]
    dynamic = decode_rows(tiny_policy, settings, eos, static=False)
    static = decode_rows(tiny_policy, settings, eos, static=True)
    assert torch.equal(static, dynamic)
    ended = torch.isin(static, torch.tensor(eos)).any(dim=1)
    assert ended.any() and not ended.all(), "some rows end early"


def test_one_state_serves_every_rollout_of_a_shape(tiny_policy):
    from medrl.rollout import RolloutEngine

    model, tok = tiny_policy.model, tiny_policy.tokenizer
    engine = RolloutEngine(STATIC, "cpu")
    first = engine.generate(model, tok, PROMPTS, GREEDY, num_samples=2)
    again = engine.generate(model, tok, PROMPTS, GREEDY, num_samples=2)
    assert len(engine.static_decoder.states) == 1
    assert torch.equal(first.completion_ids, again.completion_ids)
    (state,) = engine.static_decoder.states.values()
    steps = first.completion_ids.shape[1] + again.completion_ids.shape[1] - 2
    assert state.steps_run == steps  # the prefill made each rollout's first token
    # greedy samples of a prompt are identical: each prompt is decoded once, 3 rows
    line = f"decode=static (eager): 3 rows x {state.capacity} positions, {steps} steps"
    assert line in engine.decisions()


@pytest.fixture(scope="module")
def compiled_decoder():
    """One compiled decoder for the module: every test below decodes 12 rows at the same
    capacity, so the step is compiled once (about 15 s on a 2-core CPU)."""
    return StaticDecoder(compile=True)


@pytest.mark.parametrize("settings", [GREEDY, SAMPLE], ids=["greedy", "sampled"])
def test_compiled_decoding_draws_the_dynamic_loops_tokens(tiny_policy, settings, compiled_decoder):
    """torch.compile'd static steps: greedy tokens identical, and the same sampled tokens from
    the same per-prompt draws, rows ending early included. GRPO's log-probs are computed from
    these tokens by the same passes whatever the decode, so they are the same too."""
    tok = tiny_policy.tokenizer
    first = decode_rows(tiny_policy, settings, [tok.eos_token_id], static=False)
    stop = next(t for t in first[:, 1:4].flatten().tolist() if not (first == t).any(dim=1).all())
    eos = [tok.eos_token_id, stop]
    dynamic = decode_rows(tiny_policy, settings, eos, static=False)
    compiled = decode_rows(tiny_policy, settings, eos, static=True, decoder=compiled_decoder)
    assert torch.equal(compiled, dynamic)
    (state,) = compiled_decoder.states.values()
    assert state.compiled and state.compile_seconds is not None and state.compile_seconds > 0


def test_the_engine_compiles_once_and_reports_it(tiny_policy):
    from medrl.rollout import RolloutEngine

    model, tok = tiny_policy.model, tiny_policy.tokenizer
    engine = RolloutEngine(EngineSettings(decode="compiled"), "cpu")
    ours = engine.generate(model, tok, PROMPTS, GREEDY, num_samples=2)
    again = engine.generate(model, tok, PROMPTS, GREEDY, num_samples=2)
    theirs = generate(model, tok, PROMPTS, GREEDY, num_samples=2, engine=DYNAMIC)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert torch.equal(again.completion_ids, theirs.completion_ids)
    (state,) = engine.static_decoder.states.values()
    assert any("compiled in" in line for line in engine.decisions())
