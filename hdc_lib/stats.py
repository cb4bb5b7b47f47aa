"""The statistics of the reproduction's tables: a row's mean over seeds with its interval, and the
difference of two rows with its Welch interval and p-value, and the verdict a claim gets from it.

Seeds are few (3), so every interval is a Student-t one; two rows' seeds are independent runs with
their own spread, so their difference uses Welch's unequal-variance test (scipy's `ttest_ind`,
whose interval and p-value come from the same call).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% Student-t interval over seeds: mean ± t(0.975, n - 1) s / sqrt(n)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


class Difference(NamedTuple):
    """mean(a) - mean(b), its 95% interval and the two-sided p-value of "no difference"."""
    diff: float
    low: float
    high: float
    p_value: float


def difference_interval(a: list[float], b: list[float]) -> Difference:
    """Welch's t-test of mean(a) - mean(b) (unequal variances, Welch-Satterthwaite df)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, float("nan"), float("nan"), float("nan"))
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        # No spread in either row: the difference is exact (scipy would warn and divide by zero).
        return Difference(diff, diff, diff, 0.0 if diff else 1.0)
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(CONFIDENCE)
    return Difference(diff, float(interval.low), float(interval.high), float(test.pvalue))


def verdict(low: float, high: float, sign: int) -> str:
    """supported: the difference's interval lies on the claimed side of 0; not supported: on the
    other side; inconclusive: it contains 0 (or there is one seed, so no interval)."""
    if math.isnan(low):
        return "inconclusive (one seed)"
    if sign * low > 0 and sign * high > 0:
        return "supported"
    if sign * low < 0 and sign * high < 0:
        return "not supported (the opposite holds)"
    return "inconclusive (interval contains 0)"
