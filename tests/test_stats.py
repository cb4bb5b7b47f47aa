"""The reproduction's statistics against independent references: a published Welch test, the
coverage of the intervals on simulated seeds, Holm's correction worked by hand, and the verdict
rule by its properties."""
import math

import numpy as np
import pytest

from hdc_lib.stats import (ALPHA, DELTA, Difference, difference_interval, holm, mean_interval, prediction_interval,
                           verdict)

# R's `sleep` data and the output R prints for `t.test(extra ~ group, data = sleep)` (Welch by
# default; the example of R's ?t.test): t = -1.8608, df = 17.776, p-value = 0.07939,
# 95 percent confidence interval: -3.3654832 0.2054832; means 0.75 and 2.33.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_welch_difference_matches_rs_published_sleep_example():
    d = difference_interval(SLEEP_1, SLEEP_2)
    assert d.diff == pytest.approx(0.75 - 2.33)
    assert (d.low, d.high) == pytest.approx((-3.3654832, 0.2054832), abs=1e-7)
    assert d.p_value == pytest.approx(0.07939, abs=5e-6)


def coverage(interval, draws: int = 2000, seed: int = 0) -> float:
    """How often `interval(rng)` -> (low, high, truth) holds the truth, over simulated draws."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        low, high, truth = interval(rng)
        hits += low <= truth <= high
    return hits / draws


def test_intervals_cover_the_truth_95_percent_of_the_time_at_three_seeds():
    # 2000 draws: the binomial standard error of a 95% rate is 0.005, so +-0.02 is 4 of them.
    def mean_case(rng):
        _, low, high = mean_interval(rng.normal(0.6, 0.05, size=3))
        return low, high, 0.6

    def welch_case(rng):  # unequal spreads, the case Welch's test is for
        d = difference_interval(rng.normal(0.7, 0.06, size=3), rng.normal(0.5, 0.01, size=3))
        return d.low, d.high, 0.2

    assert coverage(mean_case) == pytest.approx(0.95, abs=0.02)
    assert coverage(welch_case) == pytest.approx(0.95, abs=0.02)


def test_prediction_interval_holds_one_more_seed_95_percent_of_the_time():
    def one_more_seed(rng):
        seeds, new = rng.normal(0.6, 0.05, size=3), rng.normal(0.6, 0.05)
        return (*prediction_interval(seeds), new)

    assert coverage(one_more_seed) == pytest.approx(0.95, abs=0.02)
    assert all(map(math.isnan, prediction_interval([0.4])))


def test_p_value_and_interval_agree_and_one_seed_has_neither():
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = difference_interval(rng.normal(0.5, 0.05, 3), rng.normal(0.55, 0.05, 3))
        assert (d.p_value < 0.05) == (d.low > 0 or d.high < 0)  # both from the same test
    assert math.isnan(mean_interval([0.4])[1]) and math.isnan(difference_interval([0.4], [0.3, 0.2]).low)
    assert difference_interval([0.5, 0.5], [0.3, 0.3])[:3] == pytest.approx((0.2, 0.2, 0.2))  # no spread: exact


def test_holm_matches_a_hand_worked_example():
    # Sorted: 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; each at least the
    # one before it: 0.02, 0.03, 0.06, 0.06; back in the given order, the NaN left out of m = 4.
    adjusted = holm([0.01, 0.04, float("nan"), 0.03, 0.005])
    assert adjusted[:2] + adjusted[3:] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[2])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def random_difference(rng) -> Difference:
    low = rng.uniform(-0.3, 0.3)
    high = low + rng.uniform(0.0, 0.3)
    return Difference(rng.uniform(low, high), low, high, rng.uniform(0, 0.2))


def test_verdict_rule_by_its_properties():
    rng = np.random.default_rng(2)
    for _ in range(500):
        d, sign, p_holm = random_difference(rng), int(rng.choice([-1, 1])), rng.uniform(0, 0.2)
        said = verdict(d, sign, p_holm)
        if p_holm < ALPHA:  # decided: by the side of 0 the difference lies on
            assert said == ("supported" if sign * d.diff > 0 else "not supported (the opposite holds)")
        elif -DELTA < d.low and d.high < DELTA:  # undecided, and too small to matter either way
            assert said == f"no difference larger than {DELTA}"
        else:  # undecided, and the interval reaches beyond what would matter: it says which
            assert said == f"too few seeds to tell (interval [{d.low:+.3f}, {d.high:+.3f}])"
        # a larger correction can only take a decision away, never make one
        assert verdict(d, sign, max(p_holm, ALPHA)) in (f"no difference larger than {DELTA}",
                                                        f"too few seeds to tell (interval [{d.low:+.3f}, {d.high:+.3f}])")
    assert verdict(difference_interval([0.4], [0.3]), +1, float("nan")) == "too few seeds to tell (one seed: no interval)"


def test_verdicts_of_clear_cases():
    d = difference_interval([0.6, 0.62, 0.64], [0.3, 0.35, 0.25])
    assert verdict(d, +1, d.p_value) == "supported"
    assert verdict(d, -1, d.p_value).startswith("not supported")
    d = difference_interval([0.50, 0.51, 0.52], [0.505, 0.515, 0.51])  # equal, within a probe's noise
    assert verdict(d, +1, d.p_value) == "no difference larger than 0.05"
    d = difference_interval([0.3, 0.5, 0.4], [0.35, 0.45, 0.3])
    assert verdict(d, +1, d.p_value).startswith("too few seeds to tell (interval [")
