"""McNemar power, sample sizes and Wilson half-widths: hand-computed values, round trips,
monotonicity, and simulations of the tests medrl runs.

Quantiles used by hand: z_a = z_{0.975} = 1.959964 (z_a^2 = 3.841459), z_b = z_{0.80} = 0.841621
(z_b^2 = 0.708326). Connor (1987): n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2,
and delta = k(n) sqrt(psi), k(n) = (z_a sqrt(n) + z_b sqrt(n + z_b^2 - z_a^2)) / (n + z_b^2).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medrl.evaluation.metrics import mcnemar_exact
from medrl.evaluation.power import (
    independent_discordance,
    items_for_halfwidth,
    mcnemar_items_needed,
    mcnemar_mde,
    mcnemar_mde_factor,
    mcnemar_mde_floor,
    mcnemar_mde_independent,
    min_discordant,
    quantiles,
    wilson_halfwidth,
)
from medrl.evaluation.predictions import wilson_interval
from medrl.power import main

# ---- hand-computed values ----------------------------------------------------------------------


def test_quantiles_are_the_two_sided_normal_ones():
    assert quantiles() == pytest.approx((1.959964, 0.841621), abs=1e-6)
    assert quantiles(0.01, 0.9) == pytest.approx((2.575829, 1.281552), abs=1e-6)


def test_items_needed_by_hand():
    # psi = 0.2, delta = 0.05: z_a sqrt(0.2) = 1.959964 * 0.447214 = 0.876523,
    # z_b sqrt(0.2 - 0.0025) = 0.841621 * 0.444410 = 0.374025; (1.250547)^2 = 1.563868;
    # / 0.0025 = 625.55 -> 626.
    assert mcnemar_items_needed(0.05, 0.2) == 626
    assert mcnemar_items_needed(-0.05, 0.2) == 626  # two-sided: the sign does not matter


def test_mde_by_hand():
    # n = 500: z_a sqrt(500) = 1.959964 * 22.360680 = 43.826127; sqrt(500 + 0.708326 - 3.841459)
    # = 22.290511, * z_b = 18.760167; k = 62.586294 / 500.708326 = 0.124996;
    # psi = 0.2: delta = 0.124996 * 0.447214 = 0.055900.
    assert mcnemar_mde_factor(500) == pytest.approx(0.124996, abs=1e-6)
    assert mcnemar_mde(500, 0.2) == pytest.approx(0.055900, abs=1e-6)


def test_floor_and_fewest_discordant_items_by_hand():
    # n = 200: k = (1.959964 * 14.142136 + 0.841621 * sqrt(196.866867)) / 200.708326
    # = (27.718195 + 11.808635) / 200.708326 = 0.196937; k^2 = 0.038784, n k^2 = 7.757 -> 8.
    assert mcnemar_mde_floor(200) == pytest.approx(0.038784, abs=1e-6)
    assert min_discordant(200) == 8
    assert math.isfinite(mcnemar_mde(200, 8 / 200)) and math.isinf(mcnemar_mde(200, 7 / 200))
    # At the floor every discordant item goes one way: delta = psi.
    assert mcnemar_mde(200, mcnemar_mde_floor(200) + 1e-12) == pytest.approx(0.038784, abs=1e-6)


def test_independent_discordance_and_its_items_by_hand():
    # 0.40 vs 0.45: psi = 0.40 * 0.55 + 0.45 * 0.60 = 0.22 + 0.27 = 0.49;
    # (1.959964 * 0.7 + 0.841621 * sqrt(0.4875))^2 / 0.0025 = (1.371975 + 0.587630)^2 / 0.0025
    # = 1536.02 -> 1537.
    assert independent_discordance(0.40, 0.45) == pytest.approx(0.49)
    assert mcnemar_items_needed(0.05, independent_discordance(0.40, 0.45)) == 1537


def test_mde_under_independence_by_hand():
    # n = 500, p = 0.4: k^2 = 0.015624; 1 - 2p = 0.2; p (1 - p) = 0.24;
    # delta = (0.015624 * 0.2 + sqrt(0.015624^2 * 0.04 + 8 * 0.015624 * 0.24)) / 2
    #       = (0.003125 + sqrt(0.030008)) / 2 = (0.003125 + 0.173228) / 2 = 0.088176.
    delta = mcnemar_mde_independent(500, 0.4)
    assert delta == pytest.approx(0.088176, abs=1e-6)
    # It is the McNemar MDE at the discordance of independent errors at 0.4 and 0.4 + delta.
    assert mcnemar_mde(500, independent_discordance(0.4, 0.4 + delta)) == pytest.approx(delta)


def test_wilson_halfwidth_by_hand_and_as_wilson_interval_sees_it():
    # p = 0.26, n = 100: 1.959964 / 1.038415 * sqrt(0.001924 + 0.000096) = 0.084831.
    assert wilson_halfwidth(0.26, 100) == pytest.approx(0.084831, abs=1e-6)
    for successes, n in [(26, 100), (0, 10), (10, 10), (3, 7)]:
        low, high = wilson_interval(successes, n)
        assert wilson_halfwidth(successes / n, n) == pytest.approx((high - low) / 2, abs=1e-12)


def test_items_for_halfwidth_by_hand():
    # p = 1/2: n = z^2 / 4h^2 - z^2 = 3.841459 / 0.01 - 3.841459 = 380.30 -> 381.
    assert items_for_halfwidth(0.5, 0.05) == 381
    # p = 0.4, h = 0.03: a = 0.24; 3.841459 (0.24 - 0.0018 + sqrt(0.0576 + 0.0009 * 0.04))
    # / 0.0018 = 1020.71 -> 1021.
    assert items_for_halfwidth(0.4, 0.03) == 1021
    assert items_for_halfwidth(0.5, 0.6) == 1  # wider than any interval's half (1/2)


# ---- round trips and monotonicity --------------------------------------------------------------


@given(st.integers(5, 20_000), st.floats(0.001, 1.0))
def test_mde_solves_connors_equation(n, psi):
    delta = mcnemar_mde(n, psi)
    if math.isinf(delta):
        assert psi < mcnemar_mde_floor(n) * (1 + 1e-9)
        return
    z_a, z_b = quantiles()
    root = z_a * math.sqrt(psi) + z_b * math.sqrt(psi - delta * delta)
    assert root * root / (delta * delta) == pytest.approx(n, rel=1e-9)
    assert 0 < delta <= psi


@given(st.floats(0.005, 0.5), st.floats(0.0, 1.0))
def test_items_needed_is_the_smallest_n_that_detects_the_difference(diff, share):
    psi = diff + share * (1 - diff)  # any feasible discordance: diff <= psi <= 1
    n = mcnemar_items_needed(diff, psi)
    assert mcnemar_mde(n, psi) <= diff
    assert n == 1 or mcnemar_mde(n - 1, psi) > diff


@given(st.floats(0.01, 0.99), st.floats(0.005, 0.3))
def test_items_for_halfwidth_is_the_smallest_n(p, h):
    n = items_for_halfwidth(p, h)
    assert wilson_halfwidth(p, n) <= h
    assert n == 1 or wilson_halfwidth(p, n - 1) > h


def test_mde_shrinks_with_n_and_grows_with_discordance_power_and_a_stricter_level():
    ns = [10, 50, 100, 200, 500, 1000, 10_000]
    assert np.all(np.diff([mcnemar_mde(n, 0.3) for n in ns]) < 0)
    assert np.all(np.diff([mcnemar_mde_independent(n, 0.3) for n in ns]) < 0)
    assert np.all(np.diff([mcnemar_mde(500, psi) for psi in (0.02, 0.05, 0.1, 0.3, 1.0)]) > 0)
    assert np.all(np.diff([mcnemar_mde(500, 0.3, power=w) for w in (0.5, 0.8, 0.9, 0.99)]) > 0)
    assert np.all(np.diff([mcnemar_mde(500, 0.3, alpha=a) for a in (0.2, 0.05, 0.01)]) > 0)
    assert np.all(np.diff([mcnemar_items_needed(d, 0.3) for d in (0.02, 0.05, 0.1, 0.3)]) < 0)
    # Independence overstates discordance, so it needs more items than the discordance the
    # studies saw (a few percent): conservative.
    assert mcnemar_mde_independent(200, 0.25) > mcnemar_mde(200, 0.1)


# ---- edge cases --------------------------------------------------------------------------------


def test_nothing_is_detectable_without_enough_discordance_or_items():
    assert math.isinf(mcnemar_mde(1000, 0.0))  # the models never disagree
    assert math.isinf(mcnemar_mde(100, 0.04))  # 4 discordant items: below the floor (8)
    assert math.isinf(mcnemar_mde_factor(3))  # n <= z_a^2: no root
    assert min_discordant(3) == 4  # more than n: none at this n
    assert math.isinf(mcnemar_mde_independent(100, 1.0))  # nothing left to gain
    assert math.isinf(mcnemar_mde_independent(10, 0.9))  # delta would pass 1 - p


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mcnemar_mde(0, 0.2), "n must be"),
        (lambda: mcnemar_mde(2.5, 0.2), "n must be"),
        (lambda: mcnemar_mde(True, 0.2), "n must be"),
        (lambda: mcnemar_mde(100, 1.2), "discordance must be"),
        (lambda: mcnemar_mde(100, math.nan), "discordance must be"),
        (lambda: mcnemar_mde(100, 0.2, alpha=0.0), "alpha must be"),
        (lambda: mcnemar_mde(100, 0.2, alpha=1.0), "alpha must be"),
        (lambda: mcnemar_mde(100, 0.2, power=1.0), "power must be"),
        (lambda: mcnemar_mde(100, 0.2, power=0.3), "power must be"),
        (lambda: mcnemar_items_needed(0.0, 0.2), "difference of 0"),
        (lambda: mcnemar_items_needed(0.3, 0.2), "discordance of at least 0.3"),
        (lambda: independent_discordance(-0.1, 0.5), "acc_a must be"),
        (lambda: items_for_halfwidth(0.5, 0.0), "halfwidth must be"),
        (lambda: wilson_halfwidth(0.5, 0), "n must be"),
    ],
)
def test_invalid_inputs_raise_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_numpy_integers_count_as_item_numbers():
    assert mcnemar_mde(np.int64(500), 0.2) == mcnemar_mde(500, 0.2)


# ---- simulation: the tests medrl runs, at the computed difference ------------------------------


def paired_cells(n: int, psi: float, delta: float, reps: int, seed: int) -> np.ndarray:
    """b and c of `reps` studies of n items, cells p10 = (psi - delta) / 2, p01 = (psi + delta)
    / 2, concordant 1 - psi (its split does not enter McNemar's test). -> [reps, 2]."""
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, [(psi - delta) / 2, (psi + delta) / 2, 1 - psi], size=reps)
    return cells[:, :2]  # [R, 2]


def test_the_asymptotic_mcnemar_test_has_the_nominal_power_at_the_mde():
    # The formula is the normal approximation of |c - b| / sqrt(b + c) > z_a; at n = 1000 and
    # psi = 0.2 (about 200 discordant items) that test's rejection rate at the MDE should be
    # 0.80 up to Monte Carlo error: sd sqrt(0.8 * 0.2 / 20000) = 0.0028, tolerance ~4 sd.
    n, psi = 1000, 0.2
    bc = paired_cells(n, psi, mcnemar_mde(n, psi), reps=20_000, seed=0)
    b, c = bc[:, 0], bc[:, 1]
    z = np.abs(c - b) / np.sqrt(np.maximum(b + c, 1))  # [R]
    assert np.mean(z > quantiles()[0]) == pytest.approx(0.80, abs=0.012)


@cache
def exact_p(b: int, c: int) -> float:
    return mcnemar_exact(b, c)


@pytest.mark.parametrize(("n", "psi"), [(500, 0.2), (400, 0.05)])
def test_medrls_exact_mcnemar_test_has_about_the_nominal_power_at_the_mde(n, psi):
    # The exact test conditions on b + c and its binomial is discrete, so its real level is
    # below 5% and its power a little below the normal approximation's: 1-4 points at these
    # sizes (measured 0.76-0.79 for n = 100-1000, psi = 0.05-0.3). 4000 replicates: Monte
    # Carlo sd 0.0063. Accept [0.75, 0.83]: the exact test's shortfall plus ~3 sd either way.
    bc = paired_cells(n, psi, mcnemar_mde(n, psi), reps=4000, seed=1)
    rate = np.mean([exact_p(int(b), int(c)) < 0.05 for b, c in bc])
    assert 0.75 <= rate <= 0.83


def test_independent_models_at_the_independence_mde_are_detected_with_about_80_percent():
    # Two models that err independently, accuracies 0.4 and 0.4 + MDE, on the same 500 items;
    # medrl's exact test on their discordant pairs. Tolerance as above.
    n, p, reps = 500, 0.4, 4000
    delta = mcnemar_mde_independent(n, p)
    rng = np.random.default_rng(2)
    right_a = rng.random((reps, n)) < p  # [R, n]
    right_b = rng.random((reps, n)) < p + delta  # [R, n]
    b = (right_a & ~right_b).sum(axis=1)  # [R]
    c = (~right_a & right_b).sum(axis=1)  # [R]
    rate = np.mean([exact_p(int(x), int(y)) < 0.05 for x, y in zip(b, c, strict=True)])
    assert 0.75 <= rate <= 0.83


# ---- the command ----------------------------------------------------------------------------


def test_cli_items_needed_with_a_given_and_an_assumed_discordance(capsys):
    assert main(["--baseline", "0.4", "--diff", "0.05", "--discordance", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "over an accuracy of 0.4 (McNemar, 80% power, 0.05 two-sided): 626" in out
    assert "discordance 0.200 (as given)" in out
    assert main(["--baseline", "0.4", "--diff", "0.05"]) == 0
    out = capsys.readouterr().out
    assert ": 1537" in out and "discordance 0.490 (independent errors" in out


def test_cli_table_over_n_and_halfwidth(capsys):
    assert main(["--baseline", "0.4", "--n", "500", "100", "--discordance", "0.2"]) == 0
    out = capsys.readouterr().out
    assert f"| 500 | 0.056 | {wilson_halfwidth(0.4, 500):.3f} |" in out
    assert "| 100 | 0.124 |" in out
    assert main(["--baseline", "0.25", "--n", "100", "--discordance", "0.02"]) == 0
    assert "| 100 | none (needs discordance >= 0.080) |" in capsys.readouterr().out
    assert main(["--baseline", "0.4", "--n", "500"]) == 0
    assert "| 500 | 0.088 |" in capsys.readouterr().out
    assert main(["--baseline", "0.5", "--halfwidth", "0.05"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(": 381")


def test_cli_refuses_impossible_questions(capsys):
    assert main(["--baseline", "0.4", "--diff", "0.3", "--discordance", "0.2"]) == 2
    assert "discordance of at least 0.3" in capsys.readouterr().err
    assert main(["--baseline", "0.9", "--diff", "0.2"]) == 2
    assert "not an accuracy" in capsys.readouterr().err
    assert main(["--baseline", "1.5", "--n", "100"]) == 2
    assert "--baseline must be" in capsys.readouterr().err
