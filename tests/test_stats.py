"""The interval and the McNemar test against values computed by hand from their definitions."""

import math

import pytest

from evaluate.verdict.stats import mcnemar_exact, wilson_interval


def test_wilson_interval_known_values():
    # 81 of 100 at 95%: textbook Wilson interval 72.2 .. 87.5 (z = 1.95996)
    lo, hi = wilson_interval(81, 100)
    z, p, n = 1.959963984540054, 0.81, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((100 * (centre - half), 100 * (centre + half)))
    assert lo == pytest.approx(72.23, abs=0.01) and hi == pytest.approx(87.48, abs=0.01)
    assert wilson_interval(100, 100)[1] == pytest.approx(100.0) and wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-9)
    lo99, hi99 = wilson_interval(81, 100, 0.99)
    assert lo99 < lo and hi99 > hi


def test_mcnemar_exact_matches_binomial_sum():
    # b=1, c=9: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 3000) < 1e-300 or mcnemar_exact(0, 3000) == 0.0
