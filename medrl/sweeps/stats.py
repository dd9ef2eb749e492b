"""Statistics across seeds: the mean with its 95% Student t interval (sweep summaries and
learning curves)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medrl.evaluation.metrics import Estimate

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30 (scipy.stats.t.ppf, 9 digits).
_T_975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851,
    2.364624252, 2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830,
    2.160368656, 2.144786688, 2.131449546, 2.119905299, 2.109815578, 2.100922040,
    2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562,
    2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)  # fmt: skip
_Z_975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: exact table for df <= 30, beyond it the Cornish-Fisher expansion of the
    t quantile in 1/df (Abramowitz & Stegun 26.7.5), within 1e-6 of the exact value there."""
    if df < 1:
        raise ValueError(f"the t distribution needs df >= 1, got {df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = _Z_975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def t_interval(values: Sequence[float]) -> Estimate:
    """Mean with the 95% Student t interval mean +- t_{0.975, n-1} * sd / sqrt(n).

    n = 1: interval nan (one seed says nothing about seed variance); n = 0: all nan.
    """
    x = np.asarray(values, dtype=float)  # [n]
    n = int(x.size)
    if n == 0:
        return Estimate.undefined(0)
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    half = t_quantile_975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)
