"""SFT: the loss counts assistant tokens only, and training lowers it."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from medrl.algorithms.losses import masked_token_nll
from medrl.algorithms.sft import SFTModule
from medrl.algorithms.sft_batches import SFTCollator, encode_sft_example, encode_sft_pool
from medrl.data.records import QARecord
from medrl.models import FullFinetune, LoraAdapter, QLoraAdapter, load_policy
from medrl.prompts import XmlFormat

RECORDS = [
    QARecord(
        id=f"q{i}",
        question=f"Which vitamin deficiency causes condition number {i}?",
        options={"A": "B12", "B": "C", "C": "D", "D": "K"},
        answer="ABCD"[i % 4],
    )
    for i in range(4)
]


def test_masked_token_nll_matches_a_hand_computed_value():
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])  # [B=1, L=3, V=2]
    input_ids = torch.tensor([[0, 0, 1]])
    loss_mask = torch.tensor([[0, 1, 1]])
    loss, count = masked_token_nll(logits, input_ids, loss_mask)
    # position 1 is predicted by logits[0] = (0, 0); position 2 by logits[1] = (2, 0).
    expected = torch.log(torch.tensor(2.0)) + (torch.log(1 + torch.exp(torch.tensor(-2.0))) + 2)
    assert count == 2
    assert loss.item() == pytest.approx(expected.item() / 2, rel=1e-6)


def test_loss_ignores_the_labels_of_masked_prompt_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)  # [B, L, V]
    input_ids = torch.randint(0, 11, (2, 6))
    loss_mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    changed = input_ids.clone()
    changed[loss_mask == 0] = (changed[loss_mask == 0] + 5) % 11
    assert torch.equal(
        masked_token_nll(logits, input_ids, loss_mask)[0],
        masked_token_nll(logits, changed, loss_mask)[0],
    )
    unmasked_change = input_ids.clone()
    unmasked_change[0, 4] = (unmasked_change[0, 4] + 1) % 11
    assert (
        masked_token_nll(logits, unmasked_change, loss_mask)[0]
        != masked_token_nll(logits, input_ids, loss_mask)[0]
    )


def test_encoding_masks_exactly_the_assistant_reply(tiny_spec):
    tokenizer = load_policy(tiny_spec, FullFinetune()).tokenizer
    example = encode_sft_example(
        tokenizer, RECORDS[1], XmlFormat(), {"enable_thinking": False}, max_seq_length=1024
    )
    trained = [t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m]
    assert tokenizer.decode(trained) == XmlFormat().render_target(RECORDS[1]) + "<|im_end|>"
    first = example.loss_mask.index(1)
    prompt = tokenizer.decode(example.input_ids[:first])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not example.truncated


def test_long_examples_are_cut_and_counted_and_prompt_only_ones_dropped(tiny_spec):
    tokenizer = load_policy(tiny_spec, FullFinetune()).tokenizer
    full = encode_sft_example(tokenizer, RECORDS[0], XmlFormat(), {}, 1024)
    prompt_len = full.loss_mask.index(1)
    cut = encode_sft_example(tokenizer, RECORDS[0], XmlFormat(), {}, prompt_len + 3)
    assert cut.truncated and len(cut.input_ids) == prompt_len + 3 and sum(cut.loss_mask) == 3
    _, counts = encode_sft_pool(tokenizer, RECORDS, XmlFormat(), {}, max_seq_length=prompt_len)
    assert counts == {"examples": 0, "truncated": 0, "dropped": 4}


def test_collator_right_pads_and_masks_padding():
    from medrl.algorithms.sft_batches import SFTExample

    batch = SFTCollator(pad_token_id=9)(
        [SFTExample("a", [1, 2, 3], [0, 1, 1], False), SFTExample("b", [4], [1], False)]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1], [1, 0, 0]]


def loss_before_and_after_sft(policy, lr: float, steps: int = 8) -> tuple[float, float]:
    """Loss on a fixed batch before and after `steps` SFT steps on that batch."""
    examples, _ = encode_sft_pool(policy.tokenizer, RECORDS, XmlFormat(), {}, 512)
    collate = SFTCollator(policy.tokenizer.pad_token_id)
    batch = collate(examples)
    module = SFTModule(policy.model, lr=lr, warmup_ratio=0.0, scheduler="constant")
    with torch.no_grad():
        before = module(batch)[0].item()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(examples, batch_size=len(examples), collate_fn=collate))
    with torch.no_grad():
        return before, module(batch)[0].item()


@pytest.mark.parametrize(
    ("adapter", "lr"),
    [
        (FullFinetune(), 3e-3),
        (LoraAdapter(r=8, alpha=16), 3e-2),
        (QLoraAdapter(r=8, alpha=16, dropout=0.0, compute_dtype="float32"), 3e-2),
    ],
    ids=["full", "lora", "qlora"],
)
def test_a_few_sft_steps_lower_the_loss_on_a_fixed_batch(tiny_spec, adapter, lr):
    pl.seed_everything(0)
    before, after = loss_before_and_after_sft(load_policy(tiny_spec, adapter), lr)
    assert after < before - 0.3, f"loss {before:.3f} -> {after:.3f}"
