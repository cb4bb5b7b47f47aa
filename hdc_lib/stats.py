"""The statistics of the reproduction's tables: a row's mean over seeds with its interval, the
difference of two rows with its Welch interval and p-value, Holm's correction over a table's claims,
and the verdict a claim gets from them.

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


# A claim is decided at this level after Holm's correction over the preset's claim lines.
ALPHA = 0.05
# Differences in a probe's accuracy (or fg_ratio) below this are too small to matter here: an
# interval inside ±DELTA says the two rows do the same, not that there are too few seeds.
DELTA = 0.05


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given; a NaN (a line with one seed, so no
    test) stays NaN and is not counted. With the m p-values sorted, p(1) <= ... <= p(m), the k-th
    adjusted one is max over j <= k of min(1, (m - j + 1) p(j)); comparing these with alpha keeps the
    chance of one or more false verdicts among the m lines below alpha."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [float("nan")] * len(p_values), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(d: Difference, sign: int, p_adjusted: float, delta: float = DELTA) -> str:
    """supported: the difference lies on the claimed side of 0 at the (Holm-adjusted) level ALPHA;
    not supported: it lies on the other side; otherwise "no difference larger than delta" when the
    interval lies inside ±delta, else "too few seeds to tell" (one seed gives no interval at all)."""
    if math.isnan(d.low):
        return "too few seeds to tell (one seed: no interval)"
    if p_adjusted < ALPHA:
        return "supported" if sign * d.diff > 0 else "not supported (the opposite holds)"
    if -delta < d.low and d.high < delta:
        return f"no difference larger than {delta}"
    return f"too few seeds to tell (interval [{d.low:+.3f}, {d.high:+.3f}])"


def prediction_interval(values: list[float]) -> tuple[float, float]:
    """Where one more seed's value falls 95% of the time, judged from n seeds (a new draw differs
    from their mean by its own spread plus the mean's): mean ± t(0.975, n - 1) s sqrt(1 + 1/n)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) * math.sqrt(1 + 1 / len(x))
    return float(x.mean() - half), float(x.mean() + half)
