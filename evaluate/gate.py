"""The release gate: does the converted model reproduce the original's accuracy?

Thresholds come from the variant's file in configs/ (``reference.top1``, ``gate.top1_tolerance``,
``gate.min_agreement``). A check that cannot be made is reported as "not made", never as passed;
the verdict is "pass" only when at least one check was made and none failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cvt_port.variants import DEFAULT_MIN_AGREEMENT, DEFAULT_TOP1_TOLERANCE, Variant

from .stats import wilson_interval

EPS = 1e-9  # accuracies are ratios of integers: guard the tolerance comparison against float noise


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "pass" | "fail" | "not made"
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def gate_checks(primary, reference, variant: Variant | None, num_samples: int, full: bool) -> list[Check]:
    """``primary``/``reference`` are ModelResult-like (top1 in %, count, agreement)."""
    checks = []
    tol = variant.top1_tolerance if variant else DEFAULT_TOP1_TOLERANCE
    if reference is None:
        checks.append(Check("reference_top1", "not made", "no --reference: the original was not evaluated"))
        checks.append(Check("agreement", "not made", "no --reference: the original was not evaluated"))
    else:
        delta = primary.top1 - reference.top1
        checks.append(Check(
            "reference_top1", "pass" if abs(delta) <= tol + EPS else "fail",
            f"converted {primary.top1:.3f}% vs original {reference.top1:.3f}%: {delta:+.3f} points (tolerance {tol:g})",
        ))
        need = variant.min_agreement if variant else DEFAULT_MIN_AGREEMENT
        checks.append(Check(
            "agreement", "pass" if primary.agreement >= need - EPS else "fail",
            f"top-1 agreement with the original {100 * primary.agreement:.3f}% (needs >= {100 * need:g}%)",
        ))
    recorded = variant.reference_top1 if variant else None
    if recorded is None:
        checks.append(Check("recorded_top1", "not made", "the variant config records no reference top-1"))
    elif full:
        delta = primary.top1 - recorded
        checks.append(Check(
            "recorded_top1", "pass" if abs(delta) <= tol + EPS else "fail",
            f"{primary.top1:.3f}% on all {num_samples} images vs recorded {recorded:g}%: {delta:+.3f} points (tolerance {tol:g})",
        ))
    else:
        lo, hi = wilson_interval(round(primary.top1 * num_samples / 100), num_samples, 0.99)
        checks.append(Check(
            "recorded_top1", "pass" if lo - EPS <= recorded <= hi + EPS else "fail",
            f"recorded {recorded:g}% {'inside' if lo <= recorded <= hi else 'outside'} the 99% interval "
            f"[{lo:.2f}, {hi:.2f}] of {primary.top1:.2f}% on a subset of {num_samples} images",
        ))
    return checks


def verdict(checks: list[Check]) -> str:
    made = [c for c in checks if c.status != "not made"]
    if not made:
        return "not made"
    return "fail" if any(c.status == "fail" for c in made) else "pass"
