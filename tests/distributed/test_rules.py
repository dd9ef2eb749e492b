"""The rules that make a run on N processes compute what one process computes, each checked
in one process: metrics reduced as sums and counts, global batches split evenly, settings that
cannot be split refused before any work."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf

from medrl import distributed
from medrl.algorithms import grpo, grpo_metrics
from medrl.algorithms.core import grpo_loss
from medrl.algorithms.sft_settings import sft_problems
from medrl.stages.sft import validation_shard

LOSS_SETTINGS = dict(
    eps_low=0.2,
    eps_high=0.2,
    dual_clip=None,
    beta=0.04,
    kl_estimator="k3",
    aggregation="seq_mean_token_mean",
    max_completion_length=6,
)


def test_micro_batch_metrics_summed_by_tokens_equal_the_whole_batch_metrics():
    """Token means (kl, clip fractions, ratio) weighted by each micro-batch's tokens, loss
    shares summed: the metrics of the whole batch, even when micro-batches hold different
    numbers of tokens (an average of per-micro-batch averages would not be)."""
    torch.manual_seed(0)
    n, c = 6, 6
    logp = torch.randn(n, c) * 0.1 - 2.0
    old = logp + torch.randn(n, c) * 0.3  # ratios far enough from 1 to clip
    ref = logp + torch.randn(n, c) * 0.2
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    lengths = torch.tensor([1, 6, 2, 6, 3, 5])  # unequal tokens per micro-batch
    mask = (torch.arange(c).unsqueeze(0) < lengths.unsqueeze(1)).float()
    _, whole = grpo_loss(logp, old, ref, adv, mask, **LOSS_SETTINGS)
    totals = dict(total_sequences=n, total_tokens=int(mask.sum()))
    sums: Counter[str] = Counter()
    for rows in (slice(0, 2), slice(2, 3), slice(3, 6)):
        _, part = grpo_loss(
            logp[rows], old[rows], ref[rows], adv[rows], mask[rows], **LOSS_SETTINGS, **totals
        )
        sums.update(grpo_metrics.metric_sums(part, tokens=float(mask[rows].sum())))
    merged = grpo_metrics.batch_metrics(sums, totals["total_tokens"])
    assert whole["clip_frac_low"] + whole["clip_frac_high"] > 0, "a clip must be active"
    for key in ("kl", "ratio_mean", "clip_frac_low", "clip_frac_high", "pg_loss"):
        assert merged[key] == pytest.approx(whole[key], rel=1e-6, abs=1e-9), key


def test_sft_batch_size_is_global_and_must_split_evenly():
    assert not [p for p in sft_problems({"batch_size": 8}, 4) if p.key == "batch_size"]
    (problem,) = [p for p in sft_problems({"batch_size": 6}, 4) if p.key == "batch_size"]
    assert problem.message("sft.").startswith("sft.batch_size=6: is the global batch and must")
    assert "a multiple of the 4 processes" in problem.message()
    assert not [p for p in sft_problems({"batch_size": 6}) if p.key == "batch_size"], (
        "without a number of processes the split is not checked"
    )


def test_validation_is_sharded_without_repeats_and_needs_an_example_per_rank():
    examples = list(range(7))
    shards = [validation_shard(examples, rank, 3) for rank in range(3)]
    assert sorted(x for shard in shards for x in shard) == examples
    assert validation_shard([], 0, 4) == []
    with pytest.raises(ValueError, match="2 held-out examples for 3 processes"):
        validation_shard([0, 1], 0, 3)


def grpo_module(prompts_per_step: int, dynamic: bool = False) -> grpo.GRPOModule:
    from medrl.data.records import QARecord
    from medrl.prompts import XmlFormat
    from medrl.rewards import RewardSet

    records = [QARecord(id="q", question="Q?", options={"A": "a", "B": "b"}, answer="A")]
    return grpo.GRPOModule(
        model=torch.nn.Linear(1, 1),
        tokenizer=None,
        prompts=records,
        rewards=RewardSet(()),
        output_format=XmlFormat(),
        prompts_per_step=prompts_per_step,
        group_size=2,
        kl=grpo.KLSettings(beta=0.0),
        dynamic_sampling=grpo.DynamicSampling(enabled=dynamic, max_extra_draws=1),
    )


def test_grpo_refuses_a_prompt_batch_that_does_not_split_over_the_ranks(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    grpo_module(4).setup("fit")  # 2 prompts per rank: fine
    with pytest.raises(
        ValueError,
        match=r"prompts_per_step=3: is the global batch and must be a multiple of the 2 processes",
    ):
        grpo_module(3).setup("fit")
    with pytest.raises(ValueError, match="dynamic_sampling.enabled=true: runs in a single"):
        grpo_module(4, dynamic=True).setup("fit")


def test_each_rank_keeps_its_contiguous_share_of_the_same_prompt_draw(monkeypatch):
    """Every rank draws the same B prompts (one seeded stream) and keeps B / world of them:
    together the ranks hold the single-process draw, each prompt's group on one rank."""
    from medrl.data.records import QARecord

    records = [
        QARecord(id=f"q{i}", question="Q?", options={"A": "a", "B": "b"}, answer="A")
        for i in range(10)
    ]
    single = grpo.PromptSampler(records, seed=3).take_indexed(4)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        module = grpo_module(4)
        module.sampler = grpo.PromptSampler(records, seed=3)
        shares.append(module._draw_prompts())
        assert module.sampler.position == 4, "every rank advances by the global batch"
    assert [index for share in shares for index, _ in share] == [index for index, _ in single]
    assert [r.id for share in shares for _, r in share] == [r.id for _, r in single]


def test_prompt_seeds_depend_on_the_run_seed_and_the_draw_only():
    seeds = {grpo.prompt_seed(seed, index) for seed in range(4) for index in range(100)}
    assert len(seeds) == 400
    assert grpo.prompt_seed(1, 5) == grpo.prompt_seed(1, 5)


def test_a_local_multirun_on_several_devices_is_refused_before_starting_processes(monkeypatch):
    """Lightning's launcher re-runs the command line: in a local multirun each process would
    start the whole sweep again."""
    monkeypatch.setattr(distributed, "_in_multirun", lambda: True)
    trainer = OmegaConf.create({"accelerator": "cpu", "devices": 2, "strategy": "ddp"})
    with pytest.raises(ValueError, match="local multirun"):
        distributed.launch(trainer)


def test_one_device_starts_no_process_and_every_helper_is_the_identity():
    trainer = OmegaConf.create({"accelerator": "cpu", "devices": 1})
    assert distributed.launch(trainer) == 1
    assert not distributed.is_distributed()
    assert (distributed.world_size(), distributed.rank(), distributed.is_rank_zero()) == (
        1,
        0,
        True,
    )
    values = torch.tensor([1.5, 2.0])
    assert torch.equal(distributed.all_reduce_sum(values), values)
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    with distributed.rank_zero_writes() as writer:
        assert writer
