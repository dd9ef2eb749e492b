"""GRPO core math against hand-computed values (tight tolerances)."""

from __future__ import annotations

import math

import pytest
import torch

from medrl.algorithms.core import (
    ADVANTAGE_ESTIMATORS,
    STD_ESTIMATORS,
    STD_SCOPES,
    aggregate_loss,
    batch_renormalize,
    cispo_surrogate,
    clipped_surrogate,
    decoupled_advantages,
    group_advantages,
    grpo_loss,
    high_entropy_mask,
    high_entropy_threshold,
    importance_ratio,
    kl_penalty,
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


# --- advantages: equal rewards and eps ---------------------------------------------------------

# Defaults of grpo_loss's keyword-only settings in the tests below (no KL, PPO's 0.2 range).
LOSS = dict(eps_low=0.2, eps_high=0.2, dual_clip=None, beta=0.0, kl_estimator="k3")


@pytest.mark.parametrize("estimator", ADVANTAGE_ESTIMATORS)
@pytest.mark.parametrize("std_estimator", STD_ESTIMATORS)
@pytest.mark.parametrize("scope", STD_SCOPES)
@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-4])
@pytest.mark.parametrize("value", [0.1, 0.3, 1.3, 1e6])
def test_equal_non_binary_rewards_give_exactly_zero_advantage_and_gradient(
    value, eps, scope, std_estimator, estimator
):
    # Regression: before the fix group_advantages(torch.full((1, 8), 1.3)) returned -0.0012 at
    # every position: the float32 mean of eight 1.3s is a rounding step off 1.3, and the zero
    # std left that step divided by eps = 1e-4 alone.
    rewards = torch.full((2, 8), value)
    adv, metrics = group_advantages(rewards, scope, std_estimator, eps, estimator)
    assert torch.equal(adv, torch.zeros(2, 8)) and metrics["frac_zero_std"] == 1.0
    # Zero advantages: no policy gradient whatever the ratio (here not 1) and the loss's form.
    logp = torch.linspace(-2.0, -0.1, 16).view(16, 1).expand(16, 3).clone().requires_grad_()
    old_logp = logp.detach() + torch.linspace(-0.5, 0.5, 48).view(16, 3)  # ratios 0.6 .. 1.6
    for policy_loss in ("clip", "cispo"):
        for level in ("token", "sequence"):
            logp.grad = None
            loss, _ = grpo_loss(
                logp,
                old_logp,
                None,
                adv.reshape(-1),
                torch.ones(16, 3),
                aggregation="seq_mean_token_mean",
                policy_loss=policy_loss,
                importance_sampling=level,
                **LOSS,
            )
            loss.backward()
            assert loss.item() == 0.0 and torch.equal(logp.grad, torch.zeros(16, 3))


def test_the_regression_case_with_default_settings_is_exactly_zero():
    adv, _ = group_advantages(torch.full((1, 8), 1.3))  # was -0.0012 everywhere
    assert torch.equal(adv, torch.zeros(1, 8))


@pytest.mark.parametrize("estimator", ADVANTAGE_ESTIMATORS)
@pytest.mark.parametrize("std_estimator", STD_ESTIMATORS)
@pytest.mark.parametrize("scope", STD_SCOPES)
@pytest.mark.parametrize("size", [3, 7])
def test_equal_float64_rewards_off_by_a_rounding_step_still_give_zero(
    size, scope, std_estimator, estimator
):
    # In float64, three 0.1s have a mean 1.4e-17 off 0.1 and a std of 1.4e-17 (not 0), and the
    # leave-one-out baseline of three 1.3s is 2.2e-16 off 1.3: without the equal-rewards test
    # on the rewards themselves, these would come out as +-1 or as 2.2e-16 / eps.
    rewards = torch.tensor([[0.1] * size, [1.3] * size, [1e6 + 0.1] * size], dtype=torch.float64)
    for eps in (0.0, 1e-4):
        adv, metrics = group_advantages(rewards, scope, std_estimator, eps, estimator)
        assert torch.equal(adv, torch.zeros(3, size)) and metrics["frac_zero_std"] == 1.0


def test_groups_with_different_constants_give_zero_under_a_nonzero_batch_std():
    rewards = torch.tensor([[0.1] * 4, [0.3] * 4, [1.3] * 4, [1e6] * 4])  # batch std about 4e5
    for estimator in ADVANTAGE_ESTIMATORS:
        adv, metrics = group_advantages(rewards, "batch", eps=0.0, estimator=estimator)
        assert torch.equal(adv, torch.zeros(4, 4)) and metrics["frac_zero_std"] == 1.0


@pytest.mark.parametrize("scope", STD_SCOPES)
@pytest.mark.parametrize("std_estimator", STD_ESTIMATORS)
def test_groups_of_one_give_zero_at_eps_zero(scope, std_estimator):
    for estimator in ADVANTAGE_ESTIMATORS:
        rewards = torch.tensor([[5.0], [1.0], [-2.5]])
        adv, metrics = group_advantages(rewards, scope, std_estimator, 0.0, estimator)
        assert torch.equal(adv, torch.zeros(3, 1)) and metrics["frac_zero_std"] == 1.0


def test_eps_zero_gives_finite_advantages_for_a_mixed_batch():
    rewards = torch.tensor([[1.3, 1.3, 1.3], [1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    adv, metrics = group_advantages(rewards, "group", "population", eps=0.0)
    # groups 1 and 3 equal (std 0, 0 / 0 -> 0); group 2: mean 1, population std sqrt(2/3)
    s = math.sqrt(2 / 3)
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.0, -1 / s, 1 / s], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected, **close)
    assert torch.equal(adv[[0, 2]], torch.zeros(2, 3))
    assert metrics["frac_zero_std"] == pytest.approx(2 / 3)
    # unbiased: std of (1, 0, 2) = sqrt(2 / 2) = 1
    adv, _ = group_advantages(rewards, "group", "unbiased", eps=0.0)
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected, **close)
    # batch: the 9 rewards' population std; the equal groups stay exactly 0
    adv, _ = group_advantages(rewards, "batch", "population", eps=0.0)
    batch_std = rewards.double().std(correction=0).item()
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]]) / batch_std
    torch.testing.assert_close(adv, expected, **close)
    assert torch.equal(adv[[0, 2]], torch.zeros(2, 3))
    assert torch.isfinite(adv).all()


@pytest.mark.parametrize("scope", STD_SCOPES)
def test_a_batch_of_equal_rewards_gives_zeros_at_eps_zero_never_nan(scope):
    for std_estimator in STD_ESTIMATORS:
        adv, metrics = group_advantages(torch.full((3, 4), 0.7), scope, std_estimator, eps=0.0)
        assert torch.equal(adv, torch.zeros(3, 4)) and metrics["frac_zero_std"] == 1.0
        assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("eps", [-1e-4, -1.0, math.nan, math.inf, -math.inf, True, "1e-4"])
def test_negative_or_non_finite_eps_is_refused(eps):
    with pytest.raises(ValueError, match="advantage eps must be"):
        group_advantages(torch.tensor([[1.0, 0.0]]), eps=eps)
    with pytest.raises(ValueError, match="advantage eps must be"):
        batch_renormalize(torch.tensor([[1.0, -1.0]]), eps=eps)


def test_integer_eps_zero_is_accepted():
    adv, _ = group_advantages(torch.tensor([[1.0, 0.0]]), eps=0)
    torch.testing.assert_close(adv, torch.tensor([[1.0, -1.0]]), **close)


@pytest.mark.parametrize(
    ("bad", "position", "shown"),
    [(math.nan, (1, 1), "nan"), (math.inf, (0, 2), "inf"), (-math.inf, (2, 0), "-inf")],
)
def test_non_finite_rewards_are_refused_naming_the_position(bad, position, shown):
    rewards = torch.zeros(3, 3)
    rewards[position] = bad
    group, sample = position
    match = rf"rewards must be finite; got {shown} at \[group, sample\] = \[{group}, {sample}\]"
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards)


def test_the_first_non_finite_reward_is_the_one_named():
    rewards = torch.tensor([[0.0, 1.0], [math.inf, math.nan]])
    with pytest.raises(ValueError, match=r"got inf at \[group, sample\] = \[1, 0\]"):
        group_advantages(rewards)


def test_an_unknown_advantage_estimator_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"estimator='loo'.*\['group_mean', 'rloo'\]"):
        group_advantages(torch.zeros(1, 2), estimator="loo")


# --- advantages: RLOO ---------------------------------------------------------------------------


def test_rloo_baseline_is_the_mean_of_the_other_rewards():
    adv, metrics = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), "none", estimator="rloo")
    # sum 2; baselines (2 - r_i) / 3 = 1/3, 2/3, 2/3, 1/3
    expected = torch.tensor([[1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3]])
    torch.testing.assert_close(adv, expected, **close)
    assert metrics["frac_zero_std"] == 0.0
    assert metrics["adv_max"] == pytest.approx(2 / 3)
    assert metrics["adv_min"] == pytest.approx(-2 / 3)
    # a group of two: the baseline is the other reward
    adv, _ = group_advantages(torch.tensor([[3.0, 1.0]]), "none", estimator="rloo")
    torch.testing.assert_close(adv, torch.tensor([[2.0, -2.0]]), **close)


def test_rloo_is_g_over_g_minus_one_times_the_group_mean_centred_rewards():
    rewards = torch.tensor([[3.0, 2.0, 0.0, 1.0], [0.5, 0.1, 0.9, 0.2], [1.0, 1.0, 1.0, 0.0]])
    rloo, _ = group_advantages(rewards, "none", estimator="rloo")
    centred, _ = group_advantages(rewards, "none", estimator="group_mean")
    torch.testing.assert_close(rloo, 4 / 3 * centred, **close)
    # row 1 by hand: mean 1.5 -> centred (1.5, 0.5, -1.5, -0.5), times 4/3
    torch.testing.assert_close(rloo[0], torch.tensor([2.0, 2 / 3, -2.0, -2 / 3]), **close)


def test_rloo_composed_with_the_group_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    signs = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    # population std 0.5: (2/3) / (0.5 + eps)
    adv, _ = group_advantages(rewards, "group", "population", eps=1e-4, estimator="rloo")
    torch.testing.assert_close(adv, signs * (2 / 3) / (0.5 + 1e-4), **close)
    adv, _ = group_advantages(rewards, "group", "population", eps=0.0, estimator="rloo")
    torch.testing.assert_close(adv, signs * 4 / 3, **close)
    # unbiased std: sqrt(1 / 3)
    adv, _ = group_advantages(rewards, "group", "unbiased", eps=0.0, estimator="rloo")
    torch.testing.assert_close(adv, signs * (2 / 3) / math.sqrt(1 / 3), **close)
    # batch std with a second, equal group (which stays 0): std of (1, 0, 0, 1, 2, 2, 2, 2)
    two = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    adv, _ = group_advantages(two, "batch", "population", eps=0.0, estimator="rloo")
    batch_std = two.double().std(correction=0).item()
    torch.testing.assert_close(adv[0:1], signs * (2 / 3) / batch_std, **close)
    assert torch.equal(adv[1], torch.zeros(4))


def test_rloo_group_of_one_is_its_own_baseline():
    adv, _ = group_advantages(torch.tensor([[5.0], [-1.0]]), "none", estimator="rloo")
    assert torch.equal(adv, torch.zeros(2, 1))


# --- advantages: GDPO's decoupled normalization --------------------------------------------------

# [B=2, G=2, K=2] (correctness, format): group 1 gets both from completion 1, group 2 only
# correctness; the format reward is equal (0, 0) within group 2.
COMPONENTS = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])


def test_decoupled_advantages_differ_where_the_normalized_sum_cannot_tell_groups_apart():
    totals = (COMPONENTS * torch.tensor([1.0, 1.0])).sum(-1)  # [[2, 0], [1, 0]]
    summed, _ = group_advantages(totals, "group", "population", eps=0.0)
    # sum_then_normalize: (2, 0): mean 1, std 1; (1, 0): mean 0.5, std 0.5 -> both (1, -1)
    torch.testing.assert_close(summed, torch.tensor([[1.0, -1.0], [1.0, -1.0]]), **close)
    decoupled, metrics = decoupled_advantages(COMPONENTS, [1.0, 1.0], "group", "population", 0.0)
    # group 1: correctness (1, -1) + format (1, -1); group 2: correctness (1, -1) + format 0
    torch.testing.assert_close(decoupled, torch.tensor([[2.0, -2.0], [1.0, -1.0]]), **close)
    assert decoupled.dtype == torch.float32
    assert set(metrics) == {0, 1}
    assert metrics[0]["frac_zero_std"] == 0.0 and metrics[1]["frac_zero_std"] == 0.5
    assert metrics[1]["adv_max"] == pytest.approx(1.0) and metrics[1]["adv_mean"] == 0.0


def test_decoupled_weights_scale_each_components_normalized_advantage():
    adv, _ = decoupled_advantages(COMPONENTS, [2.0, 0.5], "group", "population", 0.0)
    # group 1: 2 (1, -1) + 0.5 (1, -1); group 2: 2 (1, -1) + 0.5 * 0
    torch.testing.assert_close(adv, torch.tensor([[2.5, -2.5], [2.0, -2.0]]), **close)
    adv, _ = decoupled_advantages(COMPONENTS, [1.0, 1.0], "group", "population", 1e-4)
    # each component's std 0.5 gets its own eps: (0.5 / 0.5001) per unit
    unit = 0.5 / (0.5 + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([[2 * unit, -2 * unit], [unit, -unit]]), **close)


def test_a_component_equal_within_a_group_contributes_exactly_zero():
    correctness = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.9, 0.6]], dtype=torch.float64)
    fmt = torch.tensor([[0.7, 0.7, 0.7], [0.1, 0.1, 0.1]], dtype=torch.float64)  # equal per group
    components = torch.stack([correctness, fmt], dim=2)  # [2, 3, 2]
    for estimator in ADVANTAGE_ESTIMATORS:
        adv, metrics = decoupled_advantages(components, [3.0, 5.0], estimator=estimator)
        alone, _ = group_advantages(correctness, estimator=estimator)
        assert torch.equal(adv, 3.0 * alone)
        assert metrics[1]["frac_zero_std"] == 1.0 and metrics[1]["adv_max"] == 0.0


def test_decoupled_advantages_pass_the_estimator_and_scope_to_each_component():
    weights = [1.0, -0.5]
    adv, _ = decoupled_advantages(COMPONENTS, weights, "none", estimator="rloo")
    # G = 2 rloo without std: r_i - r_other; correctness (1, -1) in both groups, format (1, -1)
    # in group 1 and 0 in group 2
    torch.testing.assert_close(adv, torch.tensor([[0.5, -0.5], [1.0, -1.0]]), **close)
    adv, _ = decoupled_advantages(COMPONENTS, weights, "batch", "unbiased", 0.0)
    expected = sum(
        w * group_advantages(COMPONENTS[:, :, k], "batch", "unbiased", 0.0)[0]
        for k, w in enumerate(weights)
    )
    torch.testing.assert_close(adv, expected, **close)


def test_decoupled_groups_of_one_give_zero():
    adv, metrics = decoupled_advantages(torch.tensor([[[1.0, 0.2]], [[0.0, 0.9]]]), [1.0, 1.0])
    assert torch.equal(adv, torch.zeros(2, 1)) and metrics[0]["frac_zero_std"] == 1.0


@pytest.mark.parametrize(
    ("shape", "weights"), [((2, 2), [1.0, 1.0]), ((2, 2, 3), [1.0, 1.0]), ((2, 2, 2, 1), [1.0])]
)
def test_decoupled_advantages_refuse_components_of_the_wrong_shape(shape, weights):
    with pytest.raises(ValueError, match=r"components must be \[B, G, K\] with K = "):
        decoupled_advantages(torch.zeros(shape), weights)


def test_decoupled_advantages_refuse_non_finite_components():
    components = COMPONENTS.clone()
    components[1, 0, 1] = math.nan
    with pytest.raises(ValueError, match=r"nan at \[group, sample\] = \[1, 0\]"):
        decoupled_advantages(components, [1.0, 1.0])


# --- advantages: GDPO's batch renormalization ------------------------------------------------


def test_batch_renormalize_divides_by_the_batch_std():
    adv = torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    # population std of (1, -1, 0, 0) = sqrt(2 / 4); unbiased = sqrt(2 / 3)
    out = batch_renormalize(adv, "population", eps=0.0)
    torch.testing.assert_close(out, adv / math.sqrt(0.5), **close)
    out = batch_renormalize(adv, "unbiased", eps=0.0)
    torch.testing.assert_close(out, adv / math.sqrt(2 / 3), **close)
    out = batch_renormalize(adv, "population", eps=1e-4)
    torch.testing.assert_close(out, adv / (math.sqrt(0.5) + 1e-4), **close)
    assert torch.equal(out[1], torch.zeros(2)) and out.dtype == torch.float32


def test_batch_renormalize_keeps_zero_signal_groups_exactly_zero_and_does_not_centre():
    # a batch mean of 2/3: not subtracted (the zero group would move off 0)
    adv = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = batch_renormalize(adv, "population", eps=0.0)
    # mean 1/3, E[x^2] = 4/6: population std = sqrt(2/3 - 1/9) = sqrt(5/9)
    torch.testing.assert_close(out, adv / math.sqrt(5 / 9), **close)
    assert torch.equal(out[1], torch.zeros(3)) and out[0, 1] == 0.0


@pytest.mark.parametrize("std_estimator", STD_ESTIMATORS)
@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_batch_renormalize_of_zeros_is_zeros_never_nan(std_estimator, eps):
    assert torch.equal(batch_renormalize(torch.zeros(3, 4), std_estimator, eps), torch.zeros(3, 4))
    single = batch_renormalize(torch.zeros(1, 1), std_estimator, eps)  # unbiased std of one: 0
    assert torch.equal(single, torch.zeros(1, 1))


def test_batch_renormalize_refuses_an_unknown_std_estimator():
    with pytest.raises(ValueError, match=r"std_estimator='sample'.*\['population', 'unbiased'\]"):
        batch_renormalize(torch.zeros(1, 2), "sample")


def test_decoupled_then_renormalized_by_hand():
    adv, _ = decoupled_advantages(COMPONENTS, [1.0, 1.0], "group", "population", 0.0)
    # (2, -2, 1, -1): mean 0, population std sqrt(10 / 4)
    out = batch_renormalize(adv, "population", 0.0)
    expected = torch.tensor([[2.0, -2.0], [1.0, -1.0]]) / math.sqrt(2.5)
    torch.testing.assert_close(out, expected, **close)


# --- ratio: GSPO's sequence level ------------------------------------------------------------

SEQ_MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])  # lengths 3, 2, 0


def seq_logps():
    # row 1: log-ratios (0.2, -0.1, 0.3), mean 0.4 / 3; row 2: (0.2, -0.1), mean 0.05; the masked
    # positions differ by 10 and would move the mean if counted
    logp = torch.tensor(
        [[-1.0, -2.0, -0.5], [-0.3, -1.2, 7.0], [5.0, -1.0, 2.0]], requires_grad=True
    )
    old_logp = torch.tensor([[-1.2, -1.9, -0.8], [-0.5, -1.1, -3.0], [-5.0, 9.0, 0.0]])
    return logp, old_logp


def test_sequence_ratio_is_the_exp_of_the_mean_token_log_ratio_on_every_token():
    logp, old_logp = seq_logps()
    ratio = importance_ratio(logp, old_logp, SEQ_MASK, level="sequence")
    s1, s2 = math.exp(0.4 / 3), math.exp(0.05)
    expected = torch.tensor([[s1, s1, s1], [s2, s2, 1.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(ratio, expected, **close)
    assert torch.equal(ratio[1, 2], torch.tensor(1.0)) and torch.equal(ratio[2], torch.ones(3))


def test_sequence_ratio_gradient_reaches_every_token_with_weight_s_over_length():
    logp, old_logp = seq_logps()
    ratio = importance_ratio(logp, old_logp, SEQ_MASK, level="sequence")
    ratio[:, 0].sum().backward()
    # d s_i / d logp_it = s_i / |y_i| on the sequence's tokens, 0 where masked
    s1, s2 = math.exp(0.4 / 3), math.exp(0.05)
    expected = torch.tensor([[s1 / 3] * 3, [s2 / 2, s2 / 2, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected, **close)
    # distinct per-token weights w: d/dlogp_it sum_t' w_t' s_i = (w summed over y_i) s_i / |y_i|
    logp.grad = None
    weights = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    ratio = importance_ratio(logp, old_logp, SEQ_MASK, level="sequence")
    (ratio * weights).sum().backward()
    expected = torch.tensor([[6 * s1 / 3] * 3, [9 * s2 / 2, 9 * s2 / 2, 0.0], [0.0] * 3])
    torch.testing.assert_close(logp.grad, expected, **close)


def test_sequence_ratio_at_mu_one_is_exactly_one_with_the_gradient_of_the_mean_logp():
    logp, _ = seq_logps()
    ratio = importance_ratio(logp, logp.detach(), SEQ_MASK, level="sequence")
    assert torch.equal(ratio.detach(), torch.ones(3, 3))
    ratio[:, 0].sum().backward()
    expected = torch.tensor([[1 / 3] * 3, [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected, **close)


def test_an_unknown_importance_sampling_level_is_refused_with_the_valid_names():
    with pytest.raises(
        ValueError, match=r"importance_sampling='geometric'.*\['token', 'sequence'\]"
    ):
        importance_ratio(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), "geometric")


# --- GSPO: the clipped surrogate of the sequence ratio ------------------------------------------

GSPO_MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])  # lengths 3, 2, 1; S = 3


def gspo_logps():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0], [-0.7, 0.0, 0.0]])
    # log-ratios: row 1 (0.1, 0.0, 0.2) -> s1 = e^0.1 inside [0.8, 1.2]; row 2 (0.6, 0.4) ->
    # s2 = e^0.5 = 1.65 above 1.2; row 3 (-0.5) -> s3 = e^-0.5 = 0.61 below 0.8
    old_logp = torch.tensor([[-1.1, -2.0, -0.7], [-0.9, -1.6, 0.0], [-0.2, 0.0, 0.0]])
    return logp.requires_grad_(), old_logp


def test_gspo_loss_and_gradient_inside_and_outside_the_clip_range():
    logp, old_logp = gspo_logps()
    adv = torch.tensor([2.0, 1.0, -0.5])
    loss, metrics = grpo_loss(
        logp,
        old_logp,
        None,
        adv,
        GSPO_MASK,
        aggregation="seq_mean_token_mean",
        importance_sampling="sequence",
        policy_loss="clip",
        **LOSS,
    )
    loss.backward()
    s1, s2, s3 = math.exp(0.1), math.exp(0.5), math.exp(-0.5)
    # per-token losses: row 1 -2 s1 (inside), row 2 max(-s2, -1.2) = -1.2 (clipped),
    # row 3 max(0.5 s3, 0.5 * 0.8) = 0.4 (clipped); each row's token mean is that value
    assert loss.item() == pytest.approx((-2 * s1 - 1.2 + 0.4) / 3, rel=1e-6)
    assert metrics["pg_loss"] == pytest.approx(loss.item(), rel=1e-6)
    # row 1: -A s1 / |y_1| / S per token; the clipped rows get none
    expected = torch.tensor([[-2 * s1 / 3 / 3] * 3, [0.0] * 3, [0.0] * 3])
    torch.testing.assert_close(logp.grad, expected, **close)
    assert torch.equal(logp.grad[1:], torch.zeros(2, 3))
    # tokens: 6; clip active on row 2's 2 (A > 0, high) and row 3's 1 (A < 0, low)
    assert metrics["clip_frac_high"] == pytest.approx(2 / 6)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 6)
    assert metrics["ratio_mean"] == pytest.approx((3 * s1 + 2 * s2 + s3) / 6, rel=1e-6)


def test_gspo_clip_range_applies_to_the_sequence_ratio_not_the_tokens():
    # range [0.85, 1.15]: row 1's sequence ratio e^0.1 = 1.105 is inside, so every one of its
    # tokens gets gradient, while its third token's own ratio e^0.2 = 1.221 is outside (the
    # token level clips that token).
    logp, old_logp = gspo_logps()
    adv = torch.tensor([1.0, 0.0, 0.0])
    common = dict(aggregation="token_mean", dual_clip=None, beta=0.0, kl_estimator="k3")
    loss, _ = grpo_loss(
        logp,
        old_logp,
        None,
        adv,
        GSPO_MASK,
        eps_low=0.15,
        eps_high=0.15,
        importance_sampling="sequence",
        **common,
    )
    loss.backward()
    s1 = math.exp(0.1)
    # token_mean over 6 tokens: d/dlogp_1t of -(3 s1) / 6 = -(3 / 6) s1 / 3 = -s1 / 6
    torch.testing.assert_close(logp.grad[0], torch.full((3,), -s1 / 6), **close)
    logp.grad = None
    loss, _ = grpo_loss(
        logp,
        old_logp,
        None,
        adv,
        GSPO_MASK,
        eps_low=0.15,
        eps_high=0.15,
        importance_sampling="token",
        **common,
    )
    loss.backward()
    # token level: r = e^0.1, e^0, e^0.2 -> the last is clipped (1.22 > 1.15): -r_t / 6, 0
    expected = torch.tensor([-math.exp(0.1) / 6, -1 / 6, 0.0])
    torch.testing.assert_close(logp.grad[0], expected, **close)


def test_gspo_at_mu_one_has_plain_grpos_gradient_with_seq_mean_token_mean():
    logp, _ = gspo_logps()
    adv = torch.tensor([1.0, -1.0, 0.5])

    def grad(level: str) -> tuple[float, torch.Tensor]:
        logp.grad = None
        loss, metrics = grpo_loss(
            logp,
            logp.detach(),
            None,
            adv,
            GSPO_MASK,
            aggregation="seq_mean_token_mean",
            importance_sampling=level,
            **LOSS,
        )
        loss.backward()
        assert metrics["ratio_mean"] == 1.0
        return loss.item(), logp.grad.clone()

    # -A_i / (S |y_i|) per token: -1/9 on row 1, +1/6 on row 2, -0.5/3 on row 3
    expected = torch.tensor([[-1 / 9] * 3, [1 / 6, 1 / 6, 0.0], [-1 / 6, 0.0, 0.0]])
    (seq_loss, seq_grad), (tok_loss, tok_grad) = grad("sequence"), grad("token")
    torch.testing.assert_close(seq_grad, expected, **close)
    torch.testing.assert_close(seq_grad, tok_grad, **close)
    assert seq_loss == pytest.approx(-(1.0 - 1.0 + 0.5) / 3) and seq_loss == pytest.approx(tok_loss)


def test_gspo_rows_without_tokens_count_as_sequences_and_get_no_gradient():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 3.0]], requires_grad=True)
    old_logp = torch.tensor([[-1.1, -2.1], [4.0, -3.0]])  # row 1: s = e^0.1
    mask = torch.tensor([[1, 1], [0, 0]])
    loss, metrics = grpo_loss(
        logp,
        old_logp,
        None,
        torch.tensor([1.0, 1.0]),
        mask,
        aggregation="seq_mean_token_mean",
        importance_sampling="sequence",
        **LOSS,
    )
    loss.backward()
    s = math.exp(0.1)
    assert loss.item() == pytest.approx(-s / 2, rel=1e-6)  # S = 2, the empty row adds 0
    torch.testing.assert_close(logp.grad, torch.tensor([[-s / 4, -s / 4], [0.0, 0.0]]), **close)
    assert metrics["ratio_mean"] == pytest.approx(s, rel=1e-6)


# --- CISPO ------------------------------------------------------------------------------------

CISPO_MASK = torch.tensor([[1, 1], [1, 0]])  # T = 3 completion tokens


def test_cispo_surrogate_values_and_metrics():
    ratio = torch.tensor([[1.5, 1.0], [0.5, 1.1]])
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]])
    loss, metrics = cispo_surrogate(ratio, torch.tensor([1.0, -1.0]), logp, CISPO_MASK, 0.2, 0.2)
    # weights clip(r) = (1.2, 1.0, 0.8, [1.1 masked]); l = -w A logp
    expected = torch.tensor([[-1.2 * 1 * -1.0, -1.0 * 1 * -2.0], [-0.8 * -1 * -0.5, 0.0]])
    torch.testing.assert_close(loss, expected, **close)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 3)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 3)
    assert metrics["dual_clip_frac"] == 0.0


def test_cispo_counts_clipped_weights_whatever_the_advantages_sign():
    ratio = torch.tensor([[1.5, 1.0], [0.5, 1.1]])
    adv = torch.tensor([-1.0, 1.0])  # r > 1.2 with A < 0 and r < 0.8 with A > 0
    _, cispo = cispo_surrogate(ratio, adv, torch.zeros(2, 2), CISPO_MASK)
    assert cispo["clip_frac_high"] == pytest.approx(1 / 3)
    assert cispo["clip_frac_low"] == pytest.approx(1 / 3)
    _, ppo = clipped_surrogate(ratio, adv, CISPO_MASK)  # PPO's clip is not active there
    assert ppo["clip_frac_high"] == 0.0 and ppo["clip_frac_low"] == 0.0
    # asymmetric range: 1.1 > 1 + 0.05 counts as high, 0.5 < 1 - 0.6 does not count as low
    _, tight = cispo_surrogate(ratio, adv, torch.zeros(2, 2), torch.ones(2, 2), 0.6, 0.05)
    assert tight["clip_frac_high"] == pytest.approx(2 / 4) and tight["clip_frac_low"] == 0.0


def cispo_logps():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    # log-ratios (0.5, 0, -0.5, [0.1 masked]): r = 1.65 (above 1.2), 1, 0.61 (below 0.8)
    old_logp = torch.tensor([[-1.5, -2.0], [0.0, -1.6]])
    return logp, old_logp


def test_cispo_gradient_is_the_clipped_weight_times_the_advantage_even_outside_the_range():
    adv = torch.tensor([1.0, -1.0])

    def run(policy_loss: str):
        logp, old_logp = cispo_logps()
        loss, metrics = grpo_loss(
            logp,
            old_logp,
            None,
            adv,
            CISPO_MASK,
            aggregation="token_mean",
            policy_loss=policy_loss,
            **LOSS,
        )
        loss.backward()
        return loss.item(), logp.grad, metrics

    loss, grad, metrics = run("cispo")
    # l = 1/3 [-1.2 (1)(-1) - 1.0 (1)(-2) - 0.8 (-1)(-0.5)] = (1.2 + 2 - 0.4) / 3
    assert loss == pytest.approx(2.8 / 3, rel=1e-6)
    # d/dlogp = -clip(r) A / T: (-1.2 / 3, -1 / 3, +0.8 / 3), 0 where masked
    torch.testing.assert_close(grad, torch.tensor([[-0.4, -1 / 3], [0.8 / 3, 0.0]]), **close)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 3)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 3)
    # PPO's clip on the same tokens zeroes the two clipped tokens' gradient:
    # l = 1/3 [max(-1.65, -1.2) + max(-1, -1) + max(0.61, 0.8)] = (-1.2 - 1 + 0.8) / 3
    loss, grad, _ = run("clip")
    assert loss == pytest.approx(-1.4 / 3, rel=1e-6)
    torch.testing.assert_close(grad, torch.tensor([[0.0, -1 / 3], [0.0, 0.0]]), **close)


def test_cispo_at_mu_one_gives_minus_the_advantage_over_the_token_count():
    logp, _ = cispo_logps()
    adv = torch.tensor([1.0, -1.0])
    loss, metrics = grpo_loss(
        logp,
        logp.detach(),
        None,
        adv,
        CISPO_MASK,
        aggregation="token_mean",
        policy_loss="cispo",
        **LOSS,
    )
    loss.backward()
    # w = 1: l = -A logp -> 1/3 [-(1)(-1) - (1)(-2) - (-1)(-0.5)] = 2.5 / 3; grad -A / T
    assert loss.item() == pytest.approx(2.5 / 3, rel=1e-6)
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 3, -1 / 3], [1 / 3, 0.0]]), **close)
    assert metrics["clip_frac_high"] == 0.0 and metrics["clip_frac_low"] == 0.0


def test_cispo_with_the_sequence_ratio_weighs_every_token_by_the_clipped_sequence_ratio():
    logp, old_logp = gspo_logps()  # s = e^0.1 (inside), e^0.5 (-> 1.2), e^-0.5 (-> 0.8)
    adv = torch.tensor([2.0, 1.0, -0.5])
    loss, _ = grpo_loss(
        logp,
        old_logp,
        None,
        adv,
        GSPO_MASK,
        aggregation="token_mean",
        policy_loss="cispo",
        importance_sampling="sequence",
        **LOSS,
    )
    loss.backward()
    s1 = math.exp(0.1)
    # grad -clip(s_i) A_i / T, T = 6
    expected = torch.tensor(
        [[-s1 * 2 / 6] * 3, [-1.2 / 6, -1.2 / 6, 0.0], [0.8 * 0.5 / 6, 0.0, 0.0]]
    )
    torch.testing.assert_close(logp.grad, expected, **close)


def test_dual_clip_with_cispo_and_unknown_policy_losses_are_refused():
    logp, old_logp = cispo_logps()
    common = dict(eps_low=0.2, eps_high=0.2, beta=0.0, kl_estimator="k3", aggregation="token_mean")
    with pytest.raises(ValueError, match="dual_clip applies to policy_loss='clip' only"):
        grpo_loss(
            logp,
            old_logp,
            None,
            torch.ones(2),
            CISPO_MASK,
            dual_clip=3.0,
            policy_loss="cispo",
            **common,
        )
    with pytest.raises(ValueError, match=r"policy_loss='ppo'.*\['clip', 'cispo'\]"):
        grpo_loss(
            logp,
            old_logp,
            None,
            torch.ones(2),
            CISPO_MASK,
            dual_clip=None,
            policy_loss="ppo",
            **common,
        )


# --- entropy: high-entropy tokens and the entropy bonus --------------------------------------


def test_high_entropy_threshold_is_the_one_minus_rho_quantile():
    entropies = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    # quantile 0.6 of 5 sorted values: index 0.6 * 4 = 2.4 -> 2 + 0.4 (3 - 2) = 2.4
    assert high_entropy_threshold(entropies, 0.4) == pytest.approx(2.4)
    assert high_entropy_threshold(entropies, 0.2) == pytest.approx(3.2)  # index 3.2
    assert high_entropy_threshold(entropies, 1.0) == 0.0  # every token: the minimum
    shuffled = torch.tensor([3.0, 0.0, 4.0, 2.0, 1.0])
    assert high_entropy_threshold(shuffled, 0.4) == pytest.approx(2.4)
    assert high_entropy_threshold(torch.zeros(0), 0.2) == -math.inf


@pytest.mark.parametrize("rho", [0.0, -0.1, 1.5, math.nan])
def test_high_entropy_threshold_refuses_a_quantile_outside_zero_one(rho):
    with pytest.raises(ValueError, match=r"top_quantile must be in \(0, 1\]"):
        high_entropy_threshold(torch.tensor([1.0, 2.0]), rho)


def test_high_entropy_mask_keeps_completion_tokens_at_or_above_the_threshold():
    entropy = torch.tensor([[0.5, 2.4, 3.0], [2.39, 4.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    keep = high_entropy_mask(entropy, mask, 2.4)
    assert torch.equal(keep, torch.tensor([[0, 1, 1], [0, 1, 0]])) and keep.dtype == mask.dtype
    keep = high_entropy_mask(entropy, mask.float(), -math.inf)
    assert torch.equal(keep, mask.float())
    # the threshold of the rollout's completion tokens (5 of them) at rho = 0.4:
    # sorted (0.5, 2.39, 2.4, 3.0, 4.0), index 2.4 -> 2.4 + 0.4 (3.0 - 2.4) = 2.64
    tau = high_entropy_threshold(entropy[mask.bool()], 0.4)
    assert tau == pytest.approx(2.64, rel=1e-6)
    assert torch.equal(high_entropy_mask(entropy, mask, tau), torch.tensor([[0, 0, 1], [0, 1, 0]]))


def test_pg_mask_drops_the_policy_gradient_of_some_tokens_but_not_their_normalizers():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    pg_mask = torch.tensor([[1, 0], [1, 1]])  # the 1 on the padding is not a completion token
    adv = torch.tensor([1.0, -1.0])
    loss, metrics = grpo_loss(
        logp,
        logp.detach(),
        None,
        adv,
        mask,
        aggregation="seq_mean_token_mean",
        pg_mask=pg_mask,
        **LOSS,
    )
    loss.backward()
    # l = 1/2 [ (1/2)(-r11) + (1/1)(+r21) ]: |y_1| is still 2 although one of its tokens is off
    assert loss.item() == pytest.approx(0.5 * (-0.5 + 1.0))
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, 0.0], [0.5, 0.0]]), **close)
    assert metrics["pg_token_frac"] == pytest.approx(2 / 3)
    assert metrics["pg_loss"] == pytest.approx(0.25)
    # token_mean: T = 3, not the 2 tokens with policy gradient
    logp.grad = None
    loss, _ = grpo_loss(
        logp, logp.detach(), None, adv, mask, aggregation="token_mean", pg_mask=pg_mask, **LOSS
    )
    loss.backward()
    assert loss.item() == pytest.approx((-1.0 + 1.0) / 3)
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 3, 0.0], [1 / 3, 0.0]]), **close)


def test_pg_mask_keeps_the_kl_term_on_every_completion_token():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    ref_logp = logp.detach() - 0.3  # k1 = logp - ref = 0.3 everywhere, d k1 / d logp = 1
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = grpo_loss(
        logp,
        logp.detach(),
        ref_logp,
        torch.tensor([1.0, -1.0]),
        mask,
        eps_low=0.2,
        eps_high=0.2,
        dual_clip=None,
        beta=0.1,
        kl_estimator="k1",
        aggregation="seq_mean_token_mean",
        pg_mask=torch.tensor([[1, 0], [1, 0]]),
    )
    loss.backward()
    # pg as above (0.25) + 0.1 * 0.3; KL gradient beta / (S |y_i|): 0.025 on row 1, 0.05 on row 2
    assert loss.item() == pytest.approx(0.25 + 0.03, rel=1e-6)
    expected = torch.tensor([[-0.25 + 0.025, 0.025], [0.5 + 0.05, 0.0]])
    torch.testing.assert_close(logp.grad, expected, **close)
    assert metrics["kl"] == pytest.approx(0.3, rel=1e-6) and metrics[
        "pg_token_frac"
    ] == pytest.approx(2 / 3)


ENTROPY_MASK = torch.tensor([[1, 1], [1, 0]])


def entropy_loss(aggregation: str, coef: float = 0.1, adv=(0.0, 0.0)):
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    entropy = torch.tensor([[0.5, 1.0], [2.0, 9.0]], requires_grad=True)  # 9.0 is padding
    loss, metrics = grpo_loss(
        logp,
        logp.detach(),
        None,
        torch.tensor(adv),
        ENTROPY_MASK,
        aggregation=aggregation,
        entropy=entropy,
        entropy_coef=coef,
        max_completion_length=4,
        **LOSS,
    )
    loss.backward()
    return loss.item(), metrics, entropy.grad, logp.grad


def test_the_entropy_bonus_subtracts_coef_times_the_aggregated_entropy():
    # token_mean: H = (0.5 + 1 + 2) / 3; loss = -0.1 H; dloss/dH_t = -0.1 / 3
    loss, metrics, grad, _ = entropy_loss("token_mean")
    assert loss == pytest.approx(-0.1 * 3.5 / 3, rel=1e-6)
    assert metrics["entropy_loss"] == pytest.approx(3.5 / 3, rel=1e-6) and metrics["pg_loss"] == 0.0
    torch.testing.assert_close(grad, torch.tensor([[-0.1 / 3, -0.1 / 3], [-0.1 / 3, 0.0]]), **close)
    # seq_mean_token_mean: H = 1/2 [(0.5 + 1) / 2 + 2 / 1] = 1.375; -0.1 / (S |y_i|)
    loss, metrics, grad, _ = entropy_loss("seq_mean_token_mean")
    assert loss == pytest.approx(-0.1375, rel=1e-6)
    assert metrics["entropy_loss"] == pytest.approx(1.375, rel=1e-6)
    torch.testing.assert_close(grad, torch.tensor([[-0.025, -0.025], [-0.05, 0.0]]), **close)
    # seq_mean_token_sum_norm, L = 4: H = 3.5 / (2 * 4); -0.1 / 8 per token
    loss, _, grad, _ = entropy_loss("seq_mean_token_sum_norm")
    assert loss == pytest.approx(-0.1 * 3.5 / 8, rel=1e-6)
    torch.testing.assert_close(grad, torch.tensor([[-0.0125, -0.0125], [-0.0125, 0.0]]), **close)


def test_the_entropy_bonus_adds_to_the_policy_gradient_term():
    loss, metrics, entropy_grad, logp_grad = entropy_loss("token_mean", 0.5, adv=(1.0, -1.0))
    # pg at mu = 1: 1/3 [-1 - 1 + 1] = -1/3; bonus: -0.5 * 3.5 / 3
    assert metrics["pg_loss"] == pytest.approx(-1 / 3, rel=1e-6)
    assert loss == pytest.approx(-1 / 3 - 0.5 * 3.5 / 3, rel=1e-6)
    torch.testing.assert_close(logp_grad, torch.tensor([[-1 / 3, -1 / 3], [1 / 3, 0.0]]), **close)
    torch.testing.assert_close(
        entropy_grad, torch.tensor([[-0.5 / 3] * 2, [-0.5 / 3, 0.0]]), **close
    )


def test_the_entropy_bonus_needs_an_entropy_with_gradients_and_a_non_negative_coef():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]])
    common = dict(aggregation="token_mean", **LOSS)
    args = (logp, logp, None, torch.zeros(2), ENTROPY_MASK)
    with pytest.raises(ValueError, match="entropy_coef > 0 needs the entropy"):
        grpo_loss(*args, entropy_coef=0.1, **common)
    with pytest.raises(ValueError, match="entropy_coef > 0 needs the entropy"):
        grpo_loss(*args, entropy=torch.ones(2, 2), entropy_coef=0.1, **common)
    with pytest.raises(ValueError, match="entropy_coef must be >= 0"):
        grpo_loss(*args, entropy=torch.ones(2, 2, requires_grad=True), entropy_coef=-0.1, **common)
    # coef 0: an entropy without gradients is accepted and changes nothing
    loss, metrics = grpo_loss(*args, entropy=torch.ones(2, 2), entropy_coef=0.0, **common)
    assert loss.item() == 0.0 and "entropy_loss" not in metrics and "pg_token_frac" not in metrics
