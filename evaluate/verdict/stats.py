"""Statistics that say how much a subset's accuracy can be trusted, and how much a check can see.

Closed forms only (no scipy): the Wilson score interval for a proportion, the exact (binomial)
McNemar test for two classifiers judged on the same images, and the *power* of the gate's
checks: how large a regression a check can catch at a given number of images, and how many
images it needs to catch one of a given size. A check that could not have failed proves nothing,
so the gate turns an underpowered pass into "not made" (see :mod:`evaluate.verdict.gate`).
"""

from __future__ import annotations

import math
from statistics import NormalDist

POWER, ALPHA = 0.99, 0.01  # the gate's defaults (evaluate.verdict.gate_settings): a check fails a model
# ``gate.detectable_drop`` points worse with probability POWER, and its interval is at confidence 1 - ALPHA


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _z_one_sided(probability: float) -> float:
    return NormalDist().inv_cdf(probability)


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


def _catches(recorded: float, drop: float, total: int, alpha: float, power: float) -> bool:
    """Does the interval check fail, with probability at least ``power``, a model whose true top-1 is ``drop``
    points below ``recorded`` (percent), on ``total`` images?

    The Wilson interval at confidence 1 - alpha is the set of accuracies p with |p_hat - p| <= z sqrt(p(1-p)/n)
    (it inverts the score test), so ``recorded`` r lies above it exactly when p_hat < r - z_a sqrt(r(1-r)/n). Under
    the model's true accuracy q = r - drop, p_hat is about normal with sd sqrt(q(1-q)/n): that happens with
    probability ``power`` when drop >= z_a sqrt(r(1-r)/n) + z_power sqrt(q(1-q)/n). (At power 0.5 the second term
    is zero: the rule that only asks whether a model measuring exactly r - drop fails, a coin toss.)"""
    r, q = recorded / 100, max(recorded - drop, 0.0) / 100
    need = _z(1 - alpha) * math.sqrt(r * (1 - r) / total) + _z_one_sided(power) * math.sqrt(q * (1 - q) / total)
    return drop / 100 >= need - 1e-12


def detectable_drop(recorded: float, total: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest top-1 drop (points) below ``recorded`` (%) that the interval check (confidence 1 - ``alpha``)
    catches with probability ``power`` at ``total`` images. ``inf`` when even 0% would not be caught (a handful
    of images)."""
    if total <= 0 or not _catches(recorded, recorded, total, alpha, power):
        return math.inf
    lo, hi = 0.0, recorded  # bisection
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _catches(recorded, mid, total, alpha, power) else (mid, hi)
    return hi


def images_to_detect_drop(recorded: float, drop: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """The smallest number of images at which the interval check (confidence 1 - ``alpha``) catches a top-1 drop
    of ``drop`` points below ``recorded`` (%) with probability ``power`` (see :func:`_catches`):
    n = ceil(((z_a sqrt(r(1-r)) + z_power sqrt(q(1-q))) / drop)^2). For 81.6%, 1 point, 0.99/0.01: 36,788
    images (9,962 at power 0.5)."""
    if drop <= 0:
        raise ValueError("the drop to detect must be positive")
    r, q = recorded / 100, max(recorded - drop, 0.0) / 100
    root = (_z(1 - alpha) * math.sqrt(r * (1 - r)) + _z_one_sided(power) * math.sqrt(q * (1 - q))) / (drop / 100)
    n = max(1, math.ceil(root * root - 1e-9))
    while not _catches(recorded, drop, n, alpha, power):  # float noise at the boundary
        n += 1
    return n


def detectable_disagreement(total: int, power: float = POWER) -> float:
    """The smallest rate (points: % of images) of changed predictions that ``total`` images drawn at
    random reveal with probability ``power`` (at least one of them changed): 1 - (1 - power)^(1/n).
    A paired check (agreement, top-1 against the original) sees nothing smaller on a subset."""
    if total <= 0:
        return math.inf
    return 100 * (1 - (1 - power) ** (1 / total))


def images_to_detect_disagreement(rate: float, power: float = POWER) -> int:
    """The smallest number of random images that shows at least one changed prediction with
    probability ``power`` when ``rate`` % of all images changed: ln(1 - power) / ln(1 - rate)."""
    if not 0 < rate < 100:
        raise ValueError("the rate of changed predictions must be between 0 and 100 %")
    return math.ceil(math.log(1 - power) / math.log(1 - rate / 100) - 1e-9)


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
