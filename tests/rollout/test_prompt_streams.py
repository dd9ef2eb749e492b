"""Per-prompt random streams (prompt_seeds): a prompt's samples are a function of the prompt and
its seed alone.

- with medrl's sampler, a prompt's G completions are the same alone, with other prompts in any
  position, with any batch_size, and when other prompts' rows end early and leave the batch;
- another seed gives other completions; the same call gives the same result whatever the global
  torch RNG state, and does not consume it;
- prompt_seeds are refused with transformers' sampler, and when there is not one per prompt;
- PromptStreams.uniforms draws [n, 1] float64 values in [0, 1), prompt i's from its own stream.
"""

from __future__ import annotations

import pytest
import torch

from medrl.rollout import EngineSettings, SamplingSettings, generate
from medrl.rollout.decoding import PromptStreams

MEDRL = EngineSettings(sampler="medrl")
HF = EngineSettings(sampler="hf")
SAMPLE = SamplingSettings(temperature=1.0, max_new_tokens=5)
LONG = SamplingSettings(temperature=1.0, max_new_tokens=8)
G = 3
# Different lengths, so a prompt's left padding changes with the prompts beside it.
PROMPTS = [
    "Which vitamin deficiency causes scurvy?",
    "A",
    "Name the nerve that supplies the deltoid muscle and the skin over it.",
    "Is insulin a hormone?",
]
SEEDS = [101, 202, 303, 404]


def completions(rollout, num_samples: int = G) -> list[list[list[int]]]:
    """[prompt][sample] -> the completion's token ids, up to and including its eos."""
    rows = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(rollout.completion_ids, rollout.completion_mask, strict=True)
    ]
    return [rows[start : start + num_samples] for start in range(0, len(rows), num_samples)]


def run(policy, positions, settings=SAMPLE, seeds=SEEDS, **kwargs):
    """generate for PROMPTS[p] (p in positions), each with its seed from `seeds`."""
    return generate(
        policy.model,
        policy.tokenizer,
        [PROMPTS[p] for p in positions],
        settings,
        num_samples=G,
        engine=MEDRL,
        prompt_seeds=[seeds[p] for p in positions],
        **kwargs,
    )


def by_prompt(policy, positions, **kwargs) -> dict[int, list[list[int]]]:
    """{prompt index: its G completions} from one generate call over `positions`."""
    return dict(zip(positions, completions(run(policy, positions, **kwargs)), strict=True))


def test_a_prompts_samples_do_not_depend_on_the_other_prompts_or_the_batch_size(tiny_policy):
    """Alone, first, last, in the middle, in batches of 1 or 3: the same G completions."""
    alone = {p: by_prompt(tiny_policy, [p])[p] for p in range(len(PROMPTS))}
    calls = [
        by_prompt(tiny_policy, [0, 1, 2, 3]),
        by_prompt(tiny_policy, [3, 2, 1, 0]),
        by_prompt(tiny_policy, [2, 0, 3, 1]),
        by_prompt(tiny_policy, [1, 3]),
        by_prompt(tiny_policy, [0, 1, 2, 3], batch_size=1),
        by_prompt(tiny_policy, [3, 1, 0, 2], batch_size=3),
    ]
    for call in calls:
        for p, samples in call.items():
            assert samples == alone[p], f"prompt {p}"
    for p in range(len(PROMPTS)):
        assert len({tuple(s) for s in alone[p]}) > 1, "a prompt's G samples are distinct draws"


def test_rows_of_other_prompts_ending_early_do_not_change_a_prompts_samples(
    tiny_policy, monkeypatch
):
    """Make a token some rows emit (and others do not) an eos: those rows leave the batch at
    different steps, and every prompt still gets exactly what it gets alone."""
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    first = completions(run(tiny_policy, [0, 1, 2, 3]))
    rows = [row for prompt in first for row in prompt]
    stop = next(
        token
        for token in (row[1] for row in rows)
        if 0 < sum(token in row for row in rows) < len(rows) // 2
    )
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tok.eos_token_id, stop])

    together = run(tiny_policy, [0, 1, 2, 3])
    assert 0 < sum(not t for t in together.truncated) < len(together), "some rows end early"
    together_by_prompt = dict(zip([0, 1, 2, 3], completions(together), strict=True))
    for p in range(len(PROMPTS)):
        assert by_prompt(tiny_policy, [p])[p] == together_by_prompt[p], f"prompt {p}"
        assert by_prompt(tiny_policy, [3, 2, 1, 0])[p] == together_by_prompt[p], f"prompt {p}"


def test_a_different_seed_gives_different_samples(tiny_policy):
    """8 tokens drawn over a 150k vocabulary: two seeds agreeing is essentially impossible. The
    same prompt twice in one call with the same seed gets the same samples, with two seeds not."""
    one = completions(run(tiny_policy, [0], settings=LONG, seeds=[1, 0, 0, 0]))[0]
    other = completions(run(tiny_policy, [0], settings=LONG, seeds=[2, 0, 0, 0]))[0]
    assert all(a != b for a, b in zip(one, other, strict=True))

    twice = generate(
        tiny_policy.model,
        tiny_policy.tokenizer,
        [PROMPTS[0], PROMPTS[0], PROMPTS[0]],
        LONG,
        num_samples=G,
        engine=MEDRL,
        prompt_seeds=[1, 1, 2],
    )
    first, second, third = completions(twice)
    assert first == second == one
    assert third == other


def test_the_same_call_gives_the_same_result_whatever_the_global_rng(tiny_policy):
    """Seeding the global RNG differently before each call changes nothing, and the call leaves
    the global RNG state as it found it; without prompt_seeds it does change the samples."""
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = run(tiny_policy, [0, 1, 2])
    assert torch.equal(torch.get_rng_state(), state), "the global RNG is not consumed"
    torch.manual_seed(2)
    second = run(tiny_policy, [0, 1, 2])
    assert torch.equal(first.completion_ids, second.completion_ids)
    assert torch.equal(first.completion_mask, second.completion_mask)
    assert first.texts == second.texts

    unseeded = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        rollout = generate(
            tiny_policy.model,
            tiny_policy.tokenizer,
            PROMPTS[:3],
            SAMPLE,
            num_samples=G,
            engine=MEDRL,
        )
        unseeded.append(completions(rollout))
    assert unseeded[0] != unseeded[1], "control: the global stream does matter without seeds"


def test_prompt_seeds_need_medrls_sampler_and_one_seed_per_prompt(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    with pytest.raises(ValueError, match="sampler"):
        generate(model, tok, PROMPTS[:2], SAMPLE, num_samples=G, engine=HF, prompt_seeds=[1, 2])
    for seeds in ([1], [1, 2, 3], []):
        with pytest.raises(ValueError, match="prompt_seeds"):
            generate(
                model, tok, PROMPTS[:2], SAMPLE, num_samples=G, engine=MEDRL, prompt_seeds=seeds
            )


# --- PromptStreams --------------------------------------------------------------------------


CPU = torch.device("cpu")


def test_uniforms_are_float64_in_the_unit_interval_one_per_row():
    streams = PromptStreams([5, 6, 7], num_samples=4, device=CPU)
    for rows in (torch.arange(12), torch.tensor([0, 5, 6, 11]), torch.tensor([9])):
        u = streams.uniforms(rows)
        assert u.shape == (len(rows), 1) and u.dtype == torch.float64
        assert bool(((u >= 0) & (u < 1)).all())
    draws = streams.uniforms(torch.arange(12))
    assert draws.unique().numel() == 12, "rows get distinct draws"


def test_a_prompts_draws_do_not_change_when_other_prompts_rows_are_absent():
    """Step after step, prompt 1's rows draw the same uniforms whether all rows are active,
    only its own, or its own with some of the other prompts' rows gone."""
    seeds, k = [5, 6, 7], 3  # rows 0-2: prompt 0, 3-5: prompt 1, 6-8: prompt 2
    everyone = PromptStreams(seeds, k, CPU)
    alone = PromptStreams(seeds, k, CPU)
    some = PromptStreams(seeds, k, CPU)
    for _ in range(4):
        full = everyone.uniforms(torch.arange(9))[3:6]
        assert torch.equal(alone.uniforms(torch.tensor([3, 4, 5])), full)
        partial = some.uniforms(torch.tensor([1, 3, 4, 5, 8]))[1:4]
        assert torch.equal(partial, full)


def test_a_prompts_stream_depends_only_on_its_seed():
    """Two prompts with the same seed draw the same values; a different seed draws others."""
    streams = PromptStreams([9, 9, 10], num_samples=2, device=CPU)
    u = streams.uniforms(torch.arange(6)).squeeze(1)
    assert torch.equal(u[0:2], u[2:4])
    assert not torch.equal(u[0:2], u[4:6])
    solo = PromptStreams([9], num_samples=2, device=CPU).uniforms(torch.arange(2)).squeeze(1)
    assert torch.equal(solo, u[0:2])
