"""GRPO core math against hand-computed values (tight tolerances)."""

from __future__ import annotations

import math

import pytest
import torch

from medrl.algorithms.core import (
    aggregate_loss,
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    importance_ratio,
    kl_penalty,
    token_entropy,
)

close = dict(rtol=1e-6, atol=1e-6)


# --- advantages ------------------------------------------------------------------------------


def test_group_advantages_normalize_within_each_group_with_population_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 2.0, 0.0, 1.0]])
    adv, metrics = group_advantages(rewards, "group", "population", eps=0.0)
    # group 1: mean 0.5, std 0.5 -> +-1; group 2: mean 1.5, std sqrt(1.25)
    s = math.sqrt(1.25)
    expected = torch.tensor([[1.0, -1.0, -1.0, 1.0], [1.5 / s, 0.5 / s, -1.5 / s, -0.5 / s]])
    torch.testing.assert_close(adv, expected, **close)
    assert metrics["frac_zero_std"] == 0.0


def test_unbiased_std_divides_by_g_minus_one():
    adv, _ = group_advantages(torch.tensor([[1.0, 0.0]]), "group", "unbiased", eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([[0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)]]))


def test_eps_is_added_to_the_std():
    adv, _ = group_advantages(torch.tensor([[1.0, 0.0]]), "group", "population", eps=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.5, -0.5]]), **close)  # 0.5 / (0.5 + 0.5)


def test_batch_scope_uses_the_std_of_all_rewards():
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    adv, _ = group_advantages(rewards, "batch", "population", eps=0.0)
    std = torch.tensor([1.0, 0.0, 1.0, 1.0]).std(correction=0)
    torch.testing.assert_close(adv, torch.tensor([[0.5, -0.5], [0.0, 0.0]]) / std, **close)


def test_scope_none_only_centers_the_rewards_as_dr_grpo_does():
    adv, _ = group_advantages(torch.tensor([[3.0, 1.0]]), "none")
    torch.testing.assert_close(adv, torch.tensor([[1.0, -1.0]]), **close)


@pytest.mark.parametrize("scope", ["group", "batch", "none"])
@pytest.mark.parametrize("estimator", ["population", "unbiased"])
def test_equal_rewards_and_groups_of_one_give_zero_advantage(scope, estimator):
    adv, metrics = group_advantages(
        torch.tensor([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]), scope, estimator
    )
    assert torch.equal(adv, torch.zeros(2, 3)) and metrics["frac_zero_std"] == 1.0
    single, _ = group_advantages(torch.tensor([[5.0], [1.0]]), scope, estimator)
    assert torch.equal(single, torch.zeros(2, 1))


def test_unknown_conventions_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"std_scope='global'.*\['group', 'batch', 'none'\]"):
        group_advantages(torch.zeros(1, 2), "global")


# --- ratio and clipping ----------------------------------------------------------------------


def test_ratio_is_exactly_one_when_old_logp_is_the_detached_current_logp():
    logp = torch.tensor([[-1.2, -0.3], [-2.0, -0.1]], requires_grad=True)
    ratio = importance_ratio(logp, logp.detach(), torch.ones(2, 2))
    assert torch.equal(ratio.detach(), torch.ones(2, 2))
    ratio.sum().backward()
    assert torch.equal(logp.grad, torch.ones(2, 2))  # d/dlogp exp(logp - c) = ratio = 1


def test_ratio_is_one_on_masked_positions():
    ratio = importance_ratio(torch.tensor([[0.0, 5.0]]), torch.zeros(1, 2), torch.tensor([[1, 0]]))
    torch.testing.assert_close(ratio, torch.tensor([[1.0, 1.0]]))


def test_clipping_inactive_inside_the_trust_region():
    ratio = torch.tensor([[1.1, 0.9]])
    loss, metrics = clipped_surrogate(ratio, torch.tensor([2.0]), torch.ones(1, 2), 0.2, 0.2)
    torch.testing.assert_close(loss, torch.tensor([[-2.2, -1.8]]), **close)
    assert metrics["clip_frac_high"] == 0.0 and metrics["clip_frac_low"] == 0.0


def test_clipping_active_for_positive_and_negative_advantages():
    ratio = torch.tensor([[1.5, 0.5], [1.5, 0.5]])
    adv = torch.tensor([1.0, -1.0])
    loss, metrics = clipped_surrogate(ratio, adv, torch.ones(2, 2), eps_low=0.2, eps_high=0.2)
    # A>0: max(-1.5, -1.2) = -1.2 (clipped), max(-0.5, -0.8) = -0.5 (not clipped)
    # A<0: max(1.5, 1.2) = 1.5 (not clipped), max(0.5, 0.8) = 0.8 (clipped)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.5], [1.5, 0.8]]), **close)
    assert metrics["clip_frac_high"] == 0.25 and metrics["clip_frac_low"] == 0.25


def test_clip_higher_widens_only_the_upper_bound():
    ratio = torch.tensor([[1.25, 0.75]])
    up, _ = clipped_surrogate(ratio, torch.tensor([1.0]), torch.ones(1, 2), 0.2, 0.28)
    torch.testing.assert_close(up, torch.tensor([[-1.25, -0.75]]), **close)  # 1.25 < 1.28
    down, _ = clipped_surrogate(ratio, torch.tensor([-1.0]), torch.ones(1, 2), 0.2, 0.28)
    torch.testing.assert_close(down, torch.tensor([[1.25, 0.8]]), **close)  # low bound still 0.8


def test_dual_clip_bounds_the_loss_of_negative_advantages():
    ratio = torch.tensor([[5.0, 2.0]])
    loss, metrics = clipped_surrogate(
        ratio, torch.tensor([-1.0]), torch.ones(1, 2), 0.2, 0.2, dual_clip=3.0
    )
    torch.testing.assert_close(loss, torch.tensor([[3.0, 2.0]]), **close)
    assert metrics["dual_clip_frac"] == 0.5


def test_masked_tokens_contribute_no_loss_and_are_not_counted():
    loss, metrics = clipped_surrogate(
        torch.tensor([[2.0, 2.0]]), torch.tensor([1.0]), torch.tensor([[1, 0]])
    )
    torch.testing.assert_close(loss, torch.tensor([[-1.2, 0.0]]), **close)
    assert metrics["clip_frac_high"] == 1.0


# --- KL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ("k1", [0.5, -0.5]),
        ("k2", [0.125, 0.125]),
        ("k3", [math.exp(-0.5) - 1 + 0.5, math.exp(0.5) - 1 - 0.5]),
    ],
)
def test_kl_estimators_match_their_definitions(estimator, expected):
    logp = torch.tensor([[-1.0, -1.5]])
    ref_logp = torch.tensor([[-1.5, -1.0]])  # x = ref - logp = (-0.5, 0.5)
    kl = kl_penalty(logp, ref_logp, torch.ones(1, 2), estimator)
    torch.testing.assert_close(kl, torch.tensor([expected]), **close)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_is_zero_against_an_identical_reference(estimator):
    logp = torch.tensor([[-0.7, -2.3]])
    assert torch.equal(
        kl_penalty(logp, logp.clone(), torch.ones(1, 2), estimator), torch.zeros(1, 2)
    )


# --- aggregation -------------------------------------------------------------------------------

RAGGED_LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
RAGGED_MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_seq_mean_token_mean_averages_each_sequence_then_the_sequences():
    loss = aggregate_loss(RAGGED_LOSS, RAGGED_MASK, "seq_mean_token_mean")
    assert loss.item() == pytest.approx((2.0 + 4.0) / 2)


def test_token_mean_averages_all_tokens_of_the_batch():
    assert aggregate_loss(RAGGED_LOSS, RAGGED_MASK, "token_mean").item() == pytest.approx(10 / 4)


def test_seq_mean_token_sum_norm_divides_by_a_constant_length():
    loss = aggregate_loss(
        RAGGED_LOSS, RAGGED_MASK, "seq_mean_token_sum_norm", max_completion_length=8
    )
    assert loss.item() == pytest.approx(10 / (2 * 8))
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(RAGGED_LOSS, RAGGED_MASK, "seq_mean_token_sum_norm")


@pytest.mark.parametrize("mode", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
def test_micro_batch_losses_with_rollout_totals_sum_to_the_full_batch_loss(mode):
    full = aggregate_loss(RAGGED_LOSS, RAGGED_MASK, mode, max_completion_length=3)
    parts = sum(
        aggregate_loss(
            RAGGED_LOSS[i : i + 1],
            RAGGED_MASK[i : i + 1],
            mode,
            max_completion_length=3,
            total_sequences=2,
            total_tokens=4,
        )
        for i in range(2)
    )
    assert parts.item() == pytest.approx(full.item())


def test_entropy_of_uniform_and_one_hot_distributions():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(
        token_entropy(logits), torch.tensor([math.log(4), 0.0]), rtol=1e-6, atol=1e-6
    )


# --- the whole objective ----------------------------------------------------------------------


def test_equal_rewards_give_zero_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    adv, _ = group_advantages(torch.tensor([[1.0, 1.0]]))
    loss, _ = grpo_loss(
        logp,
        logp.detach(),
        None,
        adv.reshape(-1),
        torch.ones(2, 2),
        eps_low=0.2,
        eps_high=0.2,
        dual_clip=None,
        beta=0.0,
        kl_estimator="k3",
        aggregation="seq_mean_token_mean",
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logp.grad, torch.zeros(2, 2))


def test_with_mu_one_the_gradient_is_minus_the_advantage_over_the_length():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = grpo_loss(
        logp,
        logp.detach(),
        None,
        adv,
        mask,
        eps_low=0.2,
        eps_high=0.2,
        dual_clip=None,
        beta=0.0,
        kl_estimator="k3",
        aggregation="seq_mean_token_mean",
    )
    loss.backward()
    # l = 1/2 [ -(1/2)(r11 + r12) + (1/1) r21 ], dr/dlogp = 1 at ratio 1
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.25], [0.5, 0.0]]), **close)
    assert metrics["ratio_mean"] == 1.0


def test_beta_adds_the_kl_term_to_the_loss():
    logp = torch.tensor([[-1.0, -1.5]])
    ref_logp = torch.tensor([[-1.5, -1.0]])
    common = dict(
        eps_low=0.2, eps_high=0.2, dual_clip=None, kl_estimator="k1", aggregation="token_mean"
    )
    adv = torch.tensor([0.0])
    loss, metrics = grpo_loss(logp, logp, ref_logp, adv, torch.ones(1, 2), beta=0.5, **common)
    assert loss.item() == pytest.approx(0.5 * (0.5 - 0.5) / 2)
    loss, metrics = grpo_loss(logp, logp, ref_logp, adv, torch.tensor([[1, 0]]), beta=0.5, **common)
    assert loss.item() == pytest.approx(0.5 * 0.5) and metrics["kl"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs ref_logp"):
        grpo_loss(logp, logp, None, adv, torch.ones(1, 2), beta=0.5, **common)
