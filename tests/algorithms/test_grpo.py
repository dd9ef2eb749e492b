"""GRPO on tiny_qwen3: updates move only the adapters, the reference is the start policy, and a
golden run pins the whole step's numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import open_dict
from torch.utils.data import DataLoader

from medrl.algorithms.grpo import GRPOModule, KLSettings, PromptSampler
from medrl.data.records import QARecord
from medrl.models import LoraAdapter, load_policy
from medrl.prompts import XmlFormat
from medrl.rewards import REWARDS, RewardSet
from medrl.rewards.composite import RewardComponent
from medrl.rollout import SamplingSettings
from medrl.train import run

GOLDEN = Path(__file__).with_name("golden_grpo_smoke.json")
GOLDEN_KEYS = [
    "reward/total",
    "loss/loss",
    "loss/pg_loss",
    "loss/kl",
    "adv/std",
    "train/grad_norm",
    "train/entropy",
]
RECORDS = [
    QARecord(id=f"q{i}", question=f"Question {i}?", options={"A": "a", "B": "b"}, answer="A")
    for i in range(6)
]


def distinct_characters(completion: str, sample) -> float:
    """A reward that varies on a random model's output, so advantages are non-zero."""
    return len(set(completion)) / 32


VARYING = RewardSet((RewardComponent("distinct", distinct_characters, 1.0),))


def fit(module: GRPOModule, steps: int, precision: str = "32-true") -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps * module.mu,
        precision=precision,
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(range(steps), batch_size=1))
    return trainer


def module_for(policy, **kwargs) -> GRPOModule:
    defaults = dict(
        prompts_per_step=2,
        group_size=3,
        micro_batch_size=4,
        lr=1e-2,
        sampling=SamplingSettings(max_new_tokens=6),
        seed=0,
    )
    return GRPOModule(
        policy.model,
        policy.tokenizer,
        RECORDS,
        VARYING,
        XmlFormat(),
        policy.chat_template_kwargs,
        **{**defaults, **kwargs},
    )


def test_two_grpo_steps_change_the_lora_weights_and_not_the_base(tiny_spec):
    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    trainer = fit(module_for(policy), steps=2)
    assert torch.isfinite(torch.tensor(trainer.callback_metrics["loss/loss"]))
    changed = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)


def test_bf16_mixed_trains_the_adapters_and_leaves_the_fp32_base_as_it_was(tiny_spec):
    # Under autocast, rollouts and log-prob passes run on bf16 copies of the frozen weights
    # (medrl.rollout.merged_adapter.autocast_weights): the model must get its own back.
    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    objects = dict(policy.model.named_parameters())
    before = {n: p.detach().clone() for n, p in objects.items()}
    trainer = fit(module_for(policy), steps=2, precision="bf16-mixed")
    assert torch.isfinite(torch.tensor(trainer.callback_metrics["loss/loss"]))
    assert trainer.callback_metrics["loss/kl"] > 0, "the adapters moved the policy"
    after = dict(policy.model.named_parameters())
    assert after.keys() == objects.keys()
    assert all(after[n] is objects[n] and after[n].dtype == torch.float32 for n in after)
    changed = {n for n, p in after.items() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_bf16_weights_train_float32_adapters_with_float32_loss_math(tiny_spec, monkeypatch):
    # model.dtype=bfloat16 (the CPU default of model=qwen2.5_coder_1.5b): the frozen base is
    # stored in bfloat16, peft keeps the LoRA weights in float32, and every log-prob, ratio and
    # KL term of the loss is float32 (a bfloat16 log-prob has 8 bits of mantissa: ratios of
    # nearby policies would round to 1).
    import medrl.algorithms.grpo as grpo_module

    seen: list[torch.dtype] = []

    def spy(logp, old_logp, ref_logp, adv, mask, **kwargs):
        seen.extend(t.dtype for t in (logp, old_logp, ref_logp, adv) if t is not None)
        loss, metrics = grpo_loss(logp, old_logp, ref_logp, adv, mask, **kwargs)
        seen.append(loss.dtype)
        return loss, metrics

    grpo_loss = grpo_module.grpo_loss
    monkeypatch.setattr(grpo_module, "grpo_loss", spy)
    pl.seed_everything(0)
    tiny_spec.dtype = "bfloat16"
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    params = dict(policy.model.named_parameters())
    assert {p.dtype for n, p in params.items() if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in params.items() if "lora_" not in n} == {torch.bfloat16}
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer = fit(module_for(policy), steps=2)
    assert torch.isfinite(torch.tensor(trainer.callback_metrics["loss/loss"]))
    assert seen and set(seen) == {torch.float32}
    changed = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_mu_greater_than_one_makes_several_optimizer_steps_per_rollout(tiny_spec):
    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    module = module_for(policy, mu=2)
    trainer = fit(module, steps=2)
    assert trainer.global_step == 4 and module.rollout_step == 2


def test_beta_zero_loads_no_reference_and_reports_no_kl(tiny_spec):
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    module = module_for(policy, kl=KLSettings(beta=0.0))
    assert module.reference is None and module.conventions()["reference"] == "none (beta = 0)"
    trainer = fit(module, steps=1)
    assert "loss/kl" not in trainer.callback_metrics


def test_group_size_one_is_refused_when_the_advantage_divides_by_a_std(tiny_spec):
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        module_for(policy, group_size=1)


def test_the_prompt_sampler_is_seeded_and_covers_the_pool_each_pass():
    sampler = PromptSampler(RECORDS, seed=3)
    first_pass = [r.id for r in sampler.take(6)]
    assert sorted(first_pass) == sorted(r.id for r in RECORDS)
    again = PromptSampler(RECORDS, seed=3)
    assert [r.id for r in again.take(6)] == first_pass
    assert sampler.position == 6


def _grpo_metrics(out: Path) -> list[dict[str, float]]:
    with (out / "csv" / "grpo" / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("loss/loss")]
    return [{k: float(r[k]) for k in GOLDEN_KEYS if r.get(k)} for r in rows]


def smoke_cfg(compose, tmp_path_factory, monkeypatch, *overrides):
    monkeypatch.setitem(REWARDS, "distinct", distinct_characters)
    cfg = compose("train", ["debug=smoke", *overrides])
    with open_dict(cfg):
        cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
        cfg.reward.components = {"distinct": {"weight": 1.0}}
    return cfg


def test_grpo_after_sft_starts_at_the_sft_policy_with_zero_kl(
    compose, shared_dir, tmp_path_factory, monkeypatch
):
    from medrl.checkpoints import load_checkpoint
    from medrl.stages.start import checkpoint_point, load_start

    cfg = smoke_cfg(compose, tmp_path_factory, monkeypatch, "stages=[sft,grpo]", "grpo.max_steps=1")
    run(cfg)
    out = Path(cfg.paths.output_dir)
    first_step = _grpo_metrics(out)[0]
    assert first_step["loss/kl"] == 0.0, "the reference is the SFT policy the stage starts from"

    # The policy GRPO starts from computes exactly what the SFT checkpoint computes.
    from hydra.utils import instantiate

    sft_point = checkpoint_point(out / "checkpoints" / "sft", instantiate(cfg.model))
    policy, parent = load_start(sft_point, LoraAdapter(r=4, alpha=8), XmlFormat())
    sft_model, tokenizer, manifest = load_checkpoint(out / "checkpoints" / "sft", "merged")
    ids = tokenizer("Which vitamin?", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(
            policy.model.eval()(input_ids=ids).logits,
            sft_model.eval()(input_ids=ids).logits,
            rtol=0,
            atol=1e-6,
        )
    grpo_manifest = json.loads((out / "checkpoints" / "grpo" / "manifest.json").read_text())
    assert grpo_manifest["parent"]["kind"] == "checkpoint"
    assert grpo_manifest["parent"]["weights_hash"] == manifest.weights_hash


STRAIGHTFORWARD_ENGINE = ["engine=straightforward"]  # conf/engine/straightforward.yaml


@pytest.mark.parametrize(
    ("engine", "golden"),
    [([], GOLDEN), (STRAIGHTFORWARD_ENGINE, GOLDEN.with_name("golden_grpo_smoke_hf.json"))],
    ids=["default-engine", "straightforward-engine"],
)
def test_golden_grpo_smoke_run(compose, shared_dir, tmp_path_factory, monkeypatch, engine, golden):
    """Fixed seed, smoke config, 3 steps: loss and reward values must not drift (rtol 1e-4).
    Regenerate with MEDRL_UPDATE_GOLDEN=1 only for an intended change to the math or to the
    smoke run's inputs (e.g. the dataset's default pool sizes decide which prompts it sees).

    One golden per engine: medrl's sampler draws other samples than transformers' generate
    under one seed (same distribution, another random stream). The straightforward engine's
    golden is the one written before the rollout engine existed, so it pins the old path."""
    import os

    cfg = smoke_cfg(
        compose,
        tmp_path_factory,
        monkeypatch,
        "stages=[grpo]",
        "grpo.max_steps=3",
        "grpo.module.lr=1e-2",
        *engine,
    )
    run(cfg)
    observed = _grpo_metrics(Path(cfg.paths.output_dir))
    assert len(observed) == 3
    if os.environ.get("MEDRL_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(observed, indent=2) + "\n")
    expected = json.loads(golden.read_text())
    for step, (got, want) in enumerate(zip(observed, expected, strict=True)):
        for key in GOLDEN_KEYS:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-7), f"step {step} {key}"
    assert any(abs(s["adv/std"]) > 0 for s in observed), "the golden run must carry signal"
    out = Path(cfg.paths.output_dir)
    conventions = (out / "csv" / "grpo" / "hparams.yaml").read_text()
    assert (
        "loss_aggregation: seq_mean_token_mean" in conventions and "std_scope: group" in conventions
    )
    samples = (out / "samples" / "grpo.jsonl").read_text().splitlines()
    assert (
        len(samples) == 2 * 2
        and {"question", "completion", "total"} <= json.loads(samples[0]).keys()
    )


def test_mask_truncated_gives_truncated_completions_no_loss(tiny_spec):
    from medrl.rollout import Rollout

    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    rollout = Rollout(
        prompt_ids=torch.ones(2, 1, dtype=torch.long),
        prompt_mask=torch.ones(2, 1),
        completion_ids=torch.ones(2, 3, dtype=torch.long),
        completion_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
        texts=["abc", "ab"],
        num_tokens=[3, 2],
        truncated=[True, False],
        group_index=[0, 0],
    )
    assert module_for(policy, mask_truncated=True)._loss_mask(rollout).tolist() == [
        [0, 0, 0],
        [1, 1, 0],
    ]
    assert module_for(policy)._loss_mask(rollout).tolist() == [[1, 1, 1], [1, 1, 0]]


def signal_only_for_q0(completion: str, sample) -> float:
    """Varies within a group only for question q0; every other question always scores 0."""
    return len(set(completion)) / 32 if sample.record.id == "q0" else 0.0


def test_dynamic_sampling_keeps_only_groups_with_signal_and_counts_extra_draws(tiny_spec):
    from medrl.algorithms.grpo import DynamicSampling

    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    rewards = RewardSet((RewardComponent("q0", signal_only_for_q0, 1.0),))
    module = GRPOModule(
        policy.model,
        policy.tokenizer,
        RECORDS,
        rewards,
        XmlFormat(),
        policy.chat_template_kwargs,
        prompts_per_step=2,
        group_size=3,
        sampling=SamplingSettings(max_new_tokens=6),
        dynamic_sampling=DynamicSampling(enabled=True, max_extra_draws=4),
    )
    step = module._collect_rollout({})
    # One draw of 2 prompts holds q0 at most once, so filling B = 2 needs extra draws.
    assert step.extra_draws >= 1 and 1 <= len(step.records) <= 2
    assert all(r.id == "q0" for r in step.records)
    groups = len(step.records)
    assert len(step.rollout) == 3 * groups and step.rollout.group_index[:3] == [0, 0, 0]
    assert step.adv.shape == (3 * groups,) and step.rewards.shape == (groups, 3)
    assert (step.rewards.max(1).values > step.rewards.min(1).values).all()


@pytest.mark.parametrize("release", [True, False])
def test_release_heap_trims_before_every_update_micro_batch_and_only_when_asked(
    tiny_spec, monkeypatch, release
):
    from medrl.rollout import EngineSettings
    from medrl.rollout import engine as rollout_engine

    calls = []
    monkeypatch.setattr(rollout_engine, "release_free_heap", lambda: calls.append(1) or True)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    engine = EngineSettings(release_heap=release)
    fit(module_for(policy, micro_batch_size=2, engine=engine), steps=1)
    assert len(calls) == (3 if release else 0)  # 2 prompts x 3 samples, 2 per micro-batch


def test_the_conventions_record_names_every_variant_key(tiny_spec):
    from medrl.algorithms.grpo import EntropySettings

    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    module = module_for(
        policy,
        importance_sampling="sequence",
        policy_loss="cispo",
        entropy=EntropySettings(coef=0.01, top_quantile=0.2),
    )
    record = module.conventions()
    assert record["importance_sampling"] == "sequence" and record["policy_loss"] == "cispo"
    assert record["sequence_clip"] == {"eps_low": 3e-4, "eps_high": 4e-4}
    assert record["entropy"] == {"coef": 0.01, "top_quantile": 0.2}
    assert record["reward_weights"] == {"distinct": 1.0}
    assert {"estimator", "aggregation", "batch_renormalize"} <= record["advantage"].keys()


def test_normalize_then_sum_finds_signal_where_the_weighted_totals_are_equal():
    from medrl.algorithms.grpo import AdvantageSettings, rollout_advantages

    # Group 0: (correctness, format) = (1, 0) and (0, 1): equal totals under weights (1, 1),
    # but each component varies. Group 1: every component equal: no signal either way.
    components = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])  # [2, 2, 2]
    totals = components.sum(dim=2)  # [2, 2]
    summed = rollout_advantages(totals, components, [1.0, 1.0], AdvantageSettings())
    assert torch.equal(summed, torch.zeros(2, 2))
    gdpo = AdvantageSettings(aggregation="normalize_then_sum")
    decoupled = rollout_advantages(totals, components, [2.0, 1.0], gdpo)
    # Each component of group 0 is +-0.5 around its mean, std 0.5: normalized to
    # +-0.5 / (0.5 + 1e-4); weighted and summed: (2 - 1) times that.
    torch.testing.assert_close(decoupled[0], torch.tensor([0.5, -0.5]) / (0.5 + 1e-4))
    assert torch.equal(decoupled[1], torch.zeros(2))


def _rollout_loss_and_grads(module, step, micro_batch_size):
    """The whole rollout's loss (sum of its micro-batches' shares) and LoRA gradients."""
    module.micro_batch_size = micro_batch_size
    module.model.zero_grad()
    mask = module._loss_mask(step.rollout)
    _, entropy = module._sampling_policy_pass(step.rollout, {})
    pg_mask = module._high_entropy_tokens(entropy, mask)
    totals = dict(total_sequences=len(step.rollout), total_tokens=int(mask.sum()))
    loss = 0.0
    for rows in module._micro_batches(len(step.rollout)):
        part, metrics, _ = module._micro_batch_loss(step, rows, None, None, mask, totals, pg_mask)
        part.backward()
        loss += part.item()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}
    return loss, grads, pg_mask


def test_the_high_entropy_tokens_are_chosen_over_the_whole_rollout_not_per_micro_batch(tiny_spec):
    from medrl.algorithms.grpo import EntropySettings

    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    module = module_for(
        policy, kl=KLSettings(beta=0.0), entropy=EntropySettings(coef=0.01, top_quantile=0.25)
    )
    step = module._collect_rollout({})
    whole, whole_grads, mask = _rollout_loss_and_grads(module, step, micro_batch_size=6)
    split, split_grads, _ = _rollout_loss_and_grads(module, step, micro_batch_size=2)
    kept = int(mask.sum())
    tokens = int(module._loss_mask(step.rollout).sum())
    assert 0 < kept < tokens and kept >= 0.25 * tokens  # ties at the threshold are kept
    assert split == pytest.approx(whole, rel=1e-5, abs=1e-7)
    assert whole_grads.keys() == split_grads.keys() and whole_grads
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, rtol=1e-4, atol=1e-7)


def test_entropy_controls_train_through_the_default_engine(tiny_spec):
    from medrl.algorithms.grpo import EntropySettings

    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    entropy = EntropySettings(coef=0.05, top_quantile=0.5)
    trainer = fit(module_for(policy, mu=2, entropy=entropy), steps=1)
    metrics = trainer.callback_metrics
    assert metrics["loss/entropy_loss"] > 0 and 0 < metrics["loss/pg_token_frac"] < 1
    assert any(not torch.equal(p, before[n]) for n, p in policy.model.named_parameters())


def test_logged_entropy_is_over_the_loss_tokens_when_truncated_completions_are_masked(tiny_spec):
    # A random model over a 151k vocabulary almost never samples eos in 6 tokens: every
    # completion is truncated, so mask_truncated leaves no loss token and no entropy to average.
    pl.seed_everything(0)
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, dropout=0.0))
    trainer = fit(module_for(policy, mask_truncated=True), steps=1)
    metrics = trainer.callback_metrics
    assert metrics["rollout/frac_truncated"] == 1.0
    assert metrics["train/entropy"] == 0.0
    unmasked = fit(module_for(policy), steps=1).callback_metrics
    assert unmasked["train/entropy"] > 10  # near log(151k) = 11.9 for the random model
