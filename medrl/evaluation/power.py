"""What a study can detect: McNemar power and sample size, accuracy interval half-widths.

Pure functions: numbers in, numbers out; no I/O, no logging, no random state.

Paired comparisons. Two models answer the same n items; per item the pair (A right?, B right?)
falls in one of four cells. Only the discordant cells carry information: p10 (A right, B wrong)
and p01 (A wrong, B right), with
    discordance  psi   = p10 + p01     (the share of items the models disagree on)
    difference   delta = p01 - p10     (= acc_B - acc_A),   so |delta| <= psi <= 1.
McNemar's test asks whether the discordant items split evenly. Its normal approximation gives
the sample size of Connor (1987, Biometrics 43:207-211; after Miettinen 1968, Biometrics 24:
339-352), two-sided level alpha, power 1 - beta:
    n = (z_{1-alpha/2} sqrt(psi) + z_{1-beta} sqrt(psi - delta^2))^2 / delta^2,
and, solved for delta at a given n (the minimum detectable difference, `mcnemar_mde`),
    delta = k(n) sqrt(psi),
    k(n)  = (z_a sqrt(n) + z_b sqrt(n + z_b^2 - z_a^2)) / (n + z_b^2),
with z_a = z_{1-alpha/2} and z_b = z_{1-beta}. Since |delta| <= psi, a difference is only
possible where k(n) sqrt(psi) <= psi, i.e. psi >= k(n)^2: below that discordance no difference
is detectable at n (the models agree too often; even if every discordant item went B's way,
the power would fall short). k(n)^2 is thus the smallest difference detectable at n at all
(`mcnemar_mde_floor`), reached when all discordant items go one way; n k(n)^2 is about
(z_a + z_b)^2 = 7.85 discordant items at 80% power and 5% level, whatever n.

Before a study runs, often only the accuracies can be guessed. If the two models' errors are
assumed independent (`independent_discordance`),
    psi = p_A (1 - p_B) + p_B (1 - p_A).
Two fine-tuned versions of one model agree far more than that (the studies here saw 1-5% of
items discordant at accuracies near 0.25, against 0.375 under independence), so this psi is
in practice an upper bound and the n it gives conservative (too large rather than too small);
only models whose errors are negatively correlated would disagree more.

Single accuracies. The 95% Wilson interval (medrl.evaluation.predictions.wilson_interval) of a
proportion p on n items has half-width
    h(p, n) = z / (1 + z^2/n) sqrt(p (1 - p) / n + z^2 / 4n^2),
decreasing in n; `items_for_halfwidth` inverts it.

The normal approximation is good when the expected discordant counts are not tiny; the exact
test that medrl runs (`medrl.evaluation.metrics.mcnemar_exact`) is a little conservative, so its
power at the computed difference is a few points below the nominal one (tests/evaluation/
test_power.py measures it by simulation).
"""

from __future__ import annotations

import math
import numbers
from statistics import NormalDist

from medrl.evaluation.predictions import Z_95

ALPHA = 0.05  # two-sided level of the paired test
POWER = 0.80  # the power a "detectable" difference is detected with


def quantiles(alpha: float = ALPHA, power: float = POWER) -> tuple[float, float]:
    """(z_{1-alpha/2}, z_{power}): the normal quantiles of a two-sided level-alpha test.

    alpha in (0, 1); power in [0.5, 1): below one half the "detectable" difference would be
    smaller than the test's own critical difference, which sizes no study.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.5 <= power < 1.0:
        raise ValueError(f"power must be in [0.5, 1), got {power}")
    normal = NormalDist()
    return normal.inv_cdf(1.0 - alpha / 2.0), normal.inv_cdf(power)


def mcnemar_mde_factor(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """k(n) = (z_a sqrt(n) + z_b sqrt(n + z_b^2 - z_a^2)) / (n + z_b^2), where delta = k sqrt(psi).

    Connor's n(delta, psi) solved for delta (module docstring): delta^2 (n + z_b^2)
    - 2 z_a sqrt(n psi) delta + psi (z_a^2 - z_b^2) = 0, the larger root. For n <= z_a^2
    (n <= 3 at alpha = 0.05) the equation has no root with z_b >= 0: inf (nothing detectable).
    """
    _check_n(n)
    z_a, z_b = quantiles(alpha, power)
    if n <= z_a * z_a:
        return math.inf
    return (z_a * math.sqrt(n) + z_b * math.sqrt(n + z_b * z_b - z_a * z_a)) / (n + z_b * z_b)


def mcnemar_mde(n: int, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable difference |p01 - p10| of McNemar's test on n paired items.

    delta = k(n) sqrt(psi) (Connor 1987 solved for delta; k = `mcnemar_mde_factor`), psi the
    discordance p10 + p01 (observed: (b + c) / n). inf when no difference is detectable at this
    discordance: psi = 0, or psi < k(n)^2, where the formula's delta would exceed psi, which
    no pair of models can show (|delta| <= psi).
    """
    _check_share("discordance", discordance)
    k = mcnemar_mde_factor(n, alpha, power)
    delta = k * math.sqrt(discordance)
    return delta if discordance > 0.0 and delta <= discordance else math.inf


def mcnemar_mde_floor(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest difference detectable on n paired items at any discordance: k(n)^2.

    Reached at psi = delta = k^2 (every discordant item going one way); at a lower observed
    discordance `mcnemar_mde` is inf. A value above 1 (inf for n <= 3 at the defaults) means
    that no difference at all is detectable.
    """
    k = mcnemar_mde_factor(n, alpha, power)
    return k * k


def min_discordant(n: int, alpha: float = ALPHA, power: float = POWER) -> int:
    """The fewest discordant items b + c at which some difference is detectable on n items:
    ceil(n k(n)^2), since b + c >= n k^2 <=> psi >= k^2; n + 1 when none is detectable."""
    floor = mcnemar_mde_floor(n, alpha, power)
    if floor > 1.0:
        return n + 1
    count = max(1, math.ceil(n * floor))
    # Agree with mcnemar_mde's own test (delta <= psi) where n k^2 is a whole number up to
    # rounding.
    while count > 1 and math.isfinite(mcnemar_mde(n, (count - 1) / n, alpha, power)):
        count -= 1
    while count <= n and math.isinf(mcnemar_mde(n, count / n, alpha, power)):
        count += 1
    return count


def mcnemar_items_needed(
    diff: float, discordance: float, alpha: float = ALPHA, power: float = POWER
) -> int:
    """Paired items needed to detect a difference `diff` = p01 - p10 with McNemar's test:
    n = ceil((z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2) (Connor 1987).

    The sign of diff does not matter (a two-sided test). Raises ValueError when diff = 0 (no
    n suffices) or |diff| > discordance (impossible: at most every discordant item goes one
    way). The result is the smallest n with mcnemar_mde(n, psi) <= |diff|.
    """
    _check_share("discordance", discordance)
    delta = abs(diff)
    if delta == 0.0:
        raise ValueError("a difference of 0 cannot be detected with any number of items")
    if delta > discordance:
        raise ValueError(
            f"a difference of {delta:g} needs a discordance of at least {delta:g} (every "
            f"discordant item going one way); got discordance {discordance:g}"
        )
    z_a, z_b = quantiles(alpha, power)
    root = z_a * math.sqrt(discordance) + z_b * math.sqrt(discordance - delta * delta)
    n = max(1, math.ceil(root * root / (delta * delta)))
    # The ceiling of a float can land one off a whole-number n: settle on the exact smallest.
    while n > 1 and mcnemar_mde(n - 1, discordance, alpha, power) <= delta:
        n -= 1
    while mcnemar_mde(n, discordance, alpha, power) > delta:
        n += 1
    return n


def independent_discordance(acc_a: float, acc_b: float) -> float:
    """psi = p_A (1 - p_B) + p_B (1 - p_A): the discordance of two models whose errors are
    independent. A conservative guess before a study runs (module docstring): paired versions
    of one model agree more, so their real psi, and the n they need, are smaller."""
    _check_share("acc_a", acc_a)
    _check_share("acc_b", acc_b)
    return acc_a * (1.0 - acc_b) + acc_b * (1.0 - acc_a)


def mcnemar_mde_independent(
    n: int, baseline: float, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Minimum detectable improvement delta over a baseline accuracy p on n paired items, when
    the discordance is that of independent errors at accuracies p and p + delta.

    psi(delta) = p (1 - p - delta) + (p + delta)(1 - p) = 2 p (1 - p) + delta (1 - 2p), so
    delta = k sqrt(psi(delta)) is the positive root of delta^2 - k^2 (1 - 2p) delta
    - 2 k^2 p (1 - p) = 0:
        delta = (k^2 (1 - 2p) + sqrt(k^4 (1 - 2p)^2 + 8 k^2 p (1 - p))) / 2.
    inf when it exceeds 1 - p (no accuracy above 1): always at p = 1, where nothing is left
    to gain.
    """
    _check_share("baseline", baseline)
    k = mcnemar_mde_factor(n, alpha, power)
    if math.isinf(k):
        return math.inf
    k2, p = k * k, baseline
    delta = (k2 * (1 - 2 * p) + math.sqrt(k2 * k2 * (1 - 2 * p) ** 2 + 8 * k2 * p * (1 - p))) / 2
    return delta if 0.0 < delta <= 1.0 - p else math.inf


def wilson_halfwidth(accuracy: float, n: int, z: float = Z_95) -> float:
    """Half-width of the Wilson interval of a proportion p on n items:
    h = z / (1 + z^2/n) sqrt(p (1 - p) / n + z^2 / 4n^2)   (Wilson 1927).

    Equal to (high - low) / 2 of `wilson_interval(p n, n)` for a whole number of successes
    (the interval is not symmetric about p, but its width is this); largest at p = 1/2.
    """
    _check_n(n)
    _check_share("accuracy", accuracy)
    p = accuracy
    return z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))


def items_for_halfwidth(accuracy: float, halfwidth: float, z: float = Z_95) -> int:
    """The fewest items whose Wilson interval around `accuracy` has half-width <= `halfwidth`.

    With a = p (1 - p), h(n) = halfwidth solves h^2 (n + z^2)^2 = z^2 (a n + z^2 / 4):
        n = z^2 (a - 2 h^2 + sqrt(a^2 + h^2 (1 - 4a))) / (2 h^2),
    rounded up (h(n) decreases in n, since a <= 1/4). At p = 1/2 this is z^2 / 4h^2 - z^2.
    """
    _check_share("accuracy", accuracy)
    if not halfwidth > 0.0:
        raise ValueError(f"halfwidth must be > 0, got {halfwidth}")
    a, h2, z2 = accuracy * (1 - accuracy), halfwidth * halfwidth, z * z
    n = max(1, math.ceil(z2 * (a - 2 * h2 + math.sqrt(a * a + h2 * (1 - 4 * a))) / (2 * h2)))
    # As in mcnemar_items_needed: settle the float ceiling on the exact smallest n.
    while n > 1 and wilson_halfwidth(accuracy, n - 1, z) <= halfwidth:
        n -= 1
    while wilson_halfwidth(accuracy, n, z) > halfwidth:
        n += 1
    return n


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a whole number of items >= 1, got {n!r}")


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ValueError(f"{name} must be a share in [0, 1], got {value}")
