"""Statistics that say how much a subset's accuracy can be trusted, and how much a check can see.

Closed forms only (no scipy): the Wilson score interval for a proportion, the exact (binomial)
McNemar test for two classifiers judged on the same images, and the *power* of the gate's
checks: how large a regression a check can catch at a given number of images, and how many
images it needs to catch one of a given size. A check that could not have failed proves nothing,
so the gate turns an underpowered pass into "not made" (see :mod:`evaluate.gate`).
"""

from __future__ import annotations

import math
from statistics import NormalDist

GATE_CONFIDENCE = 0.99  # every power statement of the gate is at 99%


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _wilson(p: float, total: int, z: float) -> tuple[float, float]:
    """Wilson bounds (fractions) of an observed proportion ``p`` (need not be a ratio of integers)."""
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for the accuracy ``correct / total``, as percentages."""
    if total <= 0:
        return (float("nan"), float("nan"))
    lo, hi = _wilson(correct / total, total, _z(confidence))
    return (100 * lo, 100 * hi)


def _catches(recorded: float, drop: float, total: int, z: float) -> bool:
    """Would a model scoring ``recorded - drop`` (percent) on ``total`` images put ``recorded``
    outside its interval, i.e. fail the interval check?"""
    measured = max(recorded - drop, 0.0) / 100
    return 100 * _wilson(measured, total, z)[1] < recorded


def detectable_drop(recorded: float, total: int, confidence: float = GATE_CONFIDENCE) -> float:
    """The smallest top-1 drop (points) below ``recorded`` (%) that the interval check catches at
    ``total`` images: a model that far below the recorded figure has it outside its interval.
    ``inf`` when even 0% would not be caught (a handful of images)."""
    if total <= 0:
        return math.inf
    z = _z(confidence)
    if not _catches(recorded, recorded, total, z):
        return math.inf
    lo, hi = 0.0, recorded  # bisection: catching is monotone in the drop
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _catches(recorded, mid, total, z) else (mid, hi)
    return hi


def images_to_detect_drop(recorded: float, drop: float, confidence: float = GATE_CONFIDENCE) -> int:
    """The smallest number of images at which the interval check catches a top-1 drop of ``drop``
    points below ``recorded`` (%). For 81.6% and 1 point at 99%: see docs/gate.md."""
    if drop <= 0:
        raise ValueError("the drop to detect must be positive")
    z = _z(confidence)
    hi = 1
    while not _catches(recorded, drop, hi, z):  # the upper bound shrinks towards the measured value
        hi *= 2
        if hi > 1 << 40:
            raise ValueError(f"a drop of {drop} points below {recorded}% cannot be detected")
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _catches(recorded, drop, mid, z) else (mid, hi)
    return hi


def detectable_disagreement(total: int, confidence: float = GATE_CONFIDENCE) -> float:
    """The smallest rate (points: % of images) of changed predictions that ``total`` images drawn at
    random reveal with probability ``confidence`` (at least one of them changed): 1 - (1 - c)^(1/n).
    A paired check (agreement, top-1 against the original) sees nothing smaller on a subset."""
    if total <= 0:
        return math.inf
    return 100 * (1 - (1 - confidence) ** (1 / total))


def images_to_detect_disagreement(rate: float, confidence: float = GATE_CONFIDENCE) -> int:
    """The smallest number of random images that shows at least one changed prediction with
    probability ``confidence`` when ``rate`` % of all images changed: ln(1 - c) / ln(1 - rate)."""
    if not 0 < rate < 100:
        raise ValueError("the rate of changed predictions must be between 0 and 100 %")
    return math.ceil(math.log(1 - confidence) / math.log(1 - rate / 100) - 1e-9)


def _log_binom_pmf(k: int, n: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)


def mcnemar_exact(only_a_correct: int, only_b_correct: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    n = only_a_correct + only_b_correct
    if n == 0:
        return 1.0
    k = min(only_a_correct, only_b_correct)
    tail = sum(math.exp(_log_binom_pmf(i, n)) for i in range(k + 1))
    return min(1.0, 2 * tail)
