"""generate: shapes, masks, prompt-major groups, greedy = HF greedy, seeding, chunking, modes."""

from __future__ import annotations

import pytest
import torch

from medrl.data.records import QARecord
from medrl.prompts import build_messages, get_format, render_prompt
from medrl.rollout import (
    SamplingSettings,
    completion_mask_from_eos,
    encode_prompts,
    eval_mode,
    generate,
    generation_kwargs,
    left_pad,
)

GREEDY = SamplingSettings(greedy=True, max_new_tokens=5)
SAMPLE = SamplingSettings(temperature=1.0, max_new_tokens=4)
PROMPTS = [
    "Which vitamin deficiency causes scurvy?",
    "A",
    "Name the nerve that supplies the deltoid muscle and the skin over it.",
]


def chat_prompt(policy, question: str) -> str:
    record = QARecord(id="q", question=question, options={"A": "yes", "B": "no"}, answer="A")
    messages = build_messages(record, get_format("xml"))
    return render_prompt(policy.tokenizer, messages, policy.chat_template_kwargs)


def check_consistent(rollout, settings: SamplingSettings, pad_id: int, eos_ids: list[int]):
    n, width = rollout.completion_ids.shape
    assert rollout.completion_mask.shape == (n, width)
    assert rollout.prompt_ids.shape == rollout.prompt_mask.shape
    assert rollout.prompt_ids.shape[0] == n == len(rollout.texts) == len(rollout)
    assert width <= settings.max_new_tokens
    for row in range(n):
        ids, mask = rollout.completion_ids[row], rollout.completion_mask[row]
        length = rollout.num_tokens[row]
        assert length == int(mask.sum())
        assert mask[:length].eq(1).all() and mask[length:].eq(0).all(), "mask is a prefix"
        assert ids[length:].eq(pad_id).all(), "pad after the end"
        is_eos = torch.isin(ids[:length], torch.tensor(eos_ids))
        if rollout.truncated[row]:
            assert not is_eos.any()
            assert length == settings.max_new_tokens
        else:
            assert is_eos[-1] and not is_eos[:-1].any(), "mask ends on the first eos"
        pmask = rollout.prompt_mask[row]
        real = int(pmask.sum())
        assert pmask[-real:].eq(1).all(), "prompts are left-padded"
        assert rollout.prompt_ids[row, : pmask.numel() - real].eq(pad_id).all()


def test_left_pad_right_aligns_sequences():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_completion_mask_covers_up_to_the_first_eos_only():
    ids = torch.tensor([[4, 2, 9, 2], [4, 5, 6, 7], [3, 3, 3, 3]])
    mask, has_eos = completion_mask_from_eos(ids, eos_ids=[2, 3])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_generation_kwargs_pin_every_sampling_knob():
    assert generation_kwargs(GREEDY) == {"do_sample": False, "max_new_tokens": 5}
    kwargs = generation_kwargs(SamplingSettings(temperature=0.7, top_p=0.9, min_p=0.0))
    assert kwargs["top_k"] == 0 and kwargs["min_p"] is None and kwargs["temperature"] == 0.7
    assert generation_kwargs(SamplingSettings(min_p=0.05))["min_p"] == 0.05


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"top_p": 0.0}, {"min_p": 1.0}, {"max_new_tokens": 0}]
)
def test_invalid_sampling_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SamplingSettings(**kwargs)


def test_chat_prompts_are_encoded_exactly_as_rendered(tiny_policy):
    tok = tiny_policy.tokenizer
    prompt = chat_prompt(tiny_policy, "Q?")
    (ids,) = encode_prompts(tok, [prompt])
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(ids) == prompt, "no special token added or lost"


def test_sampled_rollout_is_consistent_and_prompt_major(tiny_policy):
    tok = tiny_policy.tokenizer
    rollout = generate(tiny_policy.model, tok, PROMPTS, SAMPLE, num_samples=3, generator_seed=1)
    assert rollout.group_index == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    check_consistent(rollout, SAMPLE, tok.pad_token_id, [tok.eos_token_id])
    for b, prompt in enumerate(PROMPTS):
        (expected,) = encode_prompts(tok, [prompt])
        for row in range(b * 3, (b + 1) * 3):
            real = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()]
            assert real.tolist() == expected
    assert rollout.completion_ids.device.type == "cpu"


def test_rows_end_at_the_first_eos_and_are_padded_after_it(tiny_policy, monkeypatch):
    """A random model rarely emits eos, so make a token it does emit count as one."""
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    first = generate(model, tok, PROMPTS, GREEDY)
    stop = int(first.completion_ids[0, 2])  # row 0's third token
    eos_ids = [tok.eos_token_id, stop]
    monkeypatch.setattr(model.generation_config, "eos_token_id", eos_ids)
    rollout = generate(model, tok, PROMPTS, GREEDY)
    check_consistent(rollout, GREEDY, tok.pad_token_id, eos_ids)
    assert rollout.num_tokens[0] == 3 and not rollout.truncated[0]
    assert rollout.completion_ids[0, :3].tolist() == first.completion_ids[0, :3].tolist()
    assert rollout.texts[0] == tok.decode(first.completion_ids[0, :3])


def test_greedy_equals_hf_greedy_generate_for_one_prompt(tiny_policy):
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    prompt = chat_prompt(tiny_policy, "Which vitamin deficiency causes scurvy?")
    ours = generate(model, tok, [prompt], GREEDY)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        hf = model.generate(**ids, do_sample=False, max_new_tokens=GREEDY.max_new_tokens)
    hf_completion = hf[0, ids.input_ids.shape[1] :]
    assert ours.completion_ids[0, : ours.num_tokens[0]].tolist() == hf_completion.tolist()
    assert ours.texts[0] == tok.decode(hf_completion, skip_special_tokens=True)


def test_greedy_is_deterministic_and_independent_of_batch_size(tiny_policy):
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    whole = generate(model, tok, PROMPTS, GREEDY, num_samples=2)
    again = generate(model, tok, PROMPTS, GREEDY, num_samples=2)
    chunked = generate(model, tok, PROMPTS, GREEDY, num_samples=2, batch_size=2)
    for other in (again, chunked):
        assert torch.equal(whole.completion_ids, other.completion_ids)
        assert torch.equal(whole.completion_mask, other.completion_mask)
        assert torch.equal(whole.prompt_ids, other.prompt_ids)
        assert torch.equal(whole.prompt_mask, other.prompt_mask)
        assert whole.texts == other.texts and whole.group_index == other.group_index
    assert whole.texts[0] == whole.texts[1], "greedy samples of one prompt agree"


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone(tiny_policy):
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate(model, tok, PROMPTS[:2], SAMPLE, num_samples=4, generator_seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    second = generate(model, tok, PROMPTS[:2], SAMPLE, num_samples=4, generator_seed=7)
    other = generate(model, tok, PROMPTS[:2], SAMPLE, num_samples=4, generator_seed=8)
    assert torch.equal(first.completion_ids, second.completion_ids)
    assert not torch.equal(first.completion_ids, other.completion_ids)
    assert len(set(first.texts[:4])) > 1, "samples of one prompt differ"


def test_padding_side_and_training_modes_are_restored(tiny_policy):
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    side, training = tok.padding_side, model.training
    model.train()
    frozen = model.model.embed_tokens.eval()  # a mixed state must survive as it was
    try:
        generate(model, tok, PROMPTS[:2], GREEDY)
        assert tok.padding_side == side
        assert model.training and not frozen.training
    finally:
        model.train(training)


def test_eval_mode_restores_modes_after_an_error(tiny_policy):
    model = tiny_policy.model
    training = model.training
    model.train()
    try:
        with pytest.raises(RuntimeError), eval_mode(model):
            assert not model.training
            raise RuntimeError
        assert all(m.training for m in model.modules())
    finally:
        model.train(training)


def test_generate_rejects_empty_prompts_and_bad_counts(tiny_policy):
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    with pytest.raises(ValueError, match="at least one prompt"):
        generate(model, tok, [], GREEDY)
    with pytest.raises(ValueError, match="num_samples"):
        generate(model, tok, PROMPTS, GREEDY, num_samples=0)


class BosTokenizer:
    """Character-level stand-in for a tokenizer that prepends BOS (id 1, written "^") by default."""

    bos_token_id = 1

    def __call__(self, texts, add_special_tokens=True):
        batch = [texts] if isinstance(texts, str) else texts
        ids = [[1 if ch == "^" else ord(ch) for ch in text] for text in batch]
        if add_special_tokens:
            ids = [[1, *seq] for seq in ids]
        return {"input_ids": ids[0] if isinstance(texts, str) else ids}


def test_a_default_bos_is_added_once_and_never_doubled():
    assert encode_prompts(BosTokenizer(), ["ab", "^ab"]) == [[1, 97, 98], [1, 97, 98]]
