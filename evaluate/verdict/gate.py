"""The release gate: does the converted model reproduce the original's accuracy?

Thresholds come from the variant's file in configs/ (``reference.top1``, ``gate.top1_tolerance``,
``gate.min_agreement``, ``gate.detectable_drop``, ``gate.power``, ``gate.alpha``; the defaults are in
:mod:`evaluate.verdict.gate_settings`). A check that cannot be made is reported as "not made", never as passed.

:func:`judge` is the verdict's own step: it takes a run's measured results (and the comparison with a baseline,
if any) and returns the checks; the record (:func:`evaluate.reports.report.build_record`) only formats them, and
:func:`verdict` reads them: "fail" when a check failed, "pass" only when at least one *accuracy* check (against the
original or the recorded figure) passed, "not made" otherwise. A baseline check alone never makes a gate: it says
that nothing changed since an earlier run, not that the model is right, and it is made at any number of images, so
it would let a 1-image subset pass (and a release, which follows a passed gate only, be made on it).

A gate is worth what it can detect, so every check says what it can see at this number of
images, and a check that could not have failed does not pass:

* On a **subset** (or any set other than the one the recorded figure was measured on), the
  recorded-top-1 check asks whether the recorded figure lies inside the Wilson interval (confidence
  ``1 - alpha``, 99%) of the measured top-1. It passes only when a model ``detectable_drop`` points below the
  recorded figure would fail it with probability ``power`` (0.99); otherwise it is "not made", with the number
  of images needed (:func:`evaluate.verdict.stats.images_to_detect_drop`).
* The paired checks (``--reference``: top-1 against the original, agreement) compare two models
  image by image. On the images evaluated they are exact; as a statement about the whole data
  they need enough images to see a change: a conversion that changes the prediction on
  ``detectable_drop`` % of all images shows at least one changed image with probability ``power`` only
  from ``images_to_detect_disagreement`` images on. Below that, a pass is "not made". On the
  full set (the one the recorded figure belongs to) nothing is sampled and they are made.
* A failure is always a failure: evidence against the model needs no power.
* Against an earlier run (``--baseline``, :func:`baseline_check`): top-1 within ``gate.baseline_top1_tolerance``
  points, at most ``gate.baseline_max_flipped`` of the images with another top-1, and every image of the
  baseline evaluated again (an image skipped as bad in this run is a failure, not a smaller comparison); made at
  any number of images, because the baseline is defined on exactly the images compared.

The default ``detectable_drop`` is 1.0 top-1 point: a little over twice the 99% half-width of the full
50,000-image validation set at CvT-13's 81.6% (0.45 points), and smaller than the gap between any two released
variants (0.9 points or more). At power 0.99 and alpha 0.01 a subset needs 36,788 images to see it (the full set
sees 0.86 points at that power). Smaller regressions are the business of the full-set check (tolerance 0.1
points) and of the paired checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from enum import Enum

from cvt_port.variants import Variant

from .gate_settings import GIVEN_WITH_DATA, MIN_IMAGES_TO_PASS, GateSettings, gate_settings
from .stats import (
    detectable_disagreement,
    detectable_drop,
    images_to_detect_disagreement,
    images_to_detect_drop,
    wilson_interval,
)

EPS = 1e-9  # accuracies are ratios of integers: guard the tolerance comparison against float noise


class CheckStatus(str, Enum):
    """What a check concluded; the value is what report.json says."""

    PASS = "pass"
    FAIL = "fail"
    NOT_MADE = "not made"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    resolution: str = ""  # what this check can detect at this number of images

    def as_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


ACCURACY_CHECKS = ("reference_top1", "agreement", "recorded_top1")  # what a gate's pass needs one of


def _power(g: GateSettings) -> str:
    return f"power {g.power:g}, alpha {g.alpha:g}"


def _pct(x: float) -> str:
    return "any" if math.isinf(x) else f"{x:.3g}"


def paired_checks(primary, reference, variant: Variant | None, num_samples: int, full: bool) -> list[Check]:
    """Top-1 against the original and top-1 agreement, on the very same images."""
    g = gate_settings(variant)
    tol, need, drop = g.top1_tolerance, g.min_agreement, g.detectable_drop
    n = num_samples
    one_image = 100 / n if n else math.inf
    if full:
        resolution = f"exact on all {n} images (one image = {one_image:.3g} points)"
        powered, why = True, ""
    else:
        seen = detectable_disagreement(n, g.power)
        needed = images_to_detect_disagreement(drop, g.power)
        resolution = (f"one image = {one_image:.3g} points; on a sample of {n} images a change on "
                      f"{_pct(seen)}% of all images shows with probability {g.power:g}")
        powered = n >= needed
        why = (f"{n} images cannot show a change on {drop:g}% of all images with probability {g.power:g} "
               f"(gate.detectable_drop, gate.power); that needs {needed} images")
    checks = []
    delta = primary.top1 - reference.top1
    ok = abs(delta) <= tol + EPS
    detail = f"converted {primary.top1:.3f}% vs original {reference.top1:.3f}%: {delta:+.3f} points (tolerance {tol:g})"
    checks.append(_decide("reference_top1", ok, powered, detail, why, resolution))
    ok = primary.agreement >= need - EPS
    detail = f"top-1 agreement with the original {100 * primary.agreement:.3f}% (needs >= {100 * need:g}%)"
    checks.append(_decide("agreement", ok, powered, detail, why, resolution))
    return checks


def recorded_check(primary, variant: Variant | None, num_samples: int, full: bool) -> Check:
    """Top-1 against the figure recorded in the variant's config."""
    recorded = variant.reference_top1 if variant else None
    n = num_samples
    if recorded is None:
        given = variant.reference if variant and variant.reference.get("dataset") == GIVEN_WITH_DATA else None
        why = (f"{given['source']} gives recorded_top1: null (no top-1 recorded on this data)" if given else
               "the variant config records no reference top-1" if variant else "no variant config: no reference top-1")
        return Check("recorded_top1", CheckStatus.NOT_MADE, why)
    g = gate_settings(variant)
    tol = g.top1_tolerance
    if full:
        delta = primary.top1 - recorded
        return Check(
            "recorded_top1", CheckStatus.PASS if abs(delta) <= tol + EPS else CheckStatus.FAIL,
            f"{primary.top1:.3f}% on all {n} images vs recorded {recorded:g}%: {delta:+.3f} points (tolerance {tol:g})",
            f"exact on the recorded set (one image = {100 / n:.3g} points)",
        )
    drop = g.detectable_drop
    if n <= 0:
        return Check("recorded_top1", CheckStatus.NOT_MADE, "no image was evaluated")
    lo, hi = wilson_interval(round(primary.top1 * n / 100), n, g.confidence)
    inside = lo - EPS <= recorded <= hi + EPS
    seen = detectable_drop(recorded, n, g.alpha, g.power)
    needed = images_to_detect_drop(recorded, drop, g.alpha, g.power)
    detail = (f"recorded {recorded:g}% {'inside' if inside else 'outside'} the {100 * g.confidence:g}% interval "
              f"[{lo:.2f}, {hi:.2f}] of {primary.top1:.2f}% on a subset of {n} images")
    resolution = f"catches a drop of {_pct(seen)} points or more below {recorded:g}% at {n} images ({_power(g)})"
    why = (f"{n} images cannot catch a drop of {drop:g} points below the recorded {recorded:g}% with "
           f"{_power(g)} (gate.detectable_drop, gate.power, gate.alpha); that needs {needed} images")
    return _decide("recorded_top1", inside, n >= needed, detail, why, resolution)


def _decide(name: str, ok: bool, powered: bool, detail: str, why: str, resolution: str) -> Check:
    if not ok:
        return Check(name, CheckStatus.FAIL, detail, resolution)
    if not powered:
        return Check(name, CheckStatus.NOT_MADE, f"{why} ({detail})", resolution)
    return Check(name, CheckStatus.PASS, detail, resolution)


def gate_checks(primary, reference, variant: Variant | None, num_samples: int, full: bool) -> list[Check]:
    """``primary``/``reference`` are ModelResult-like (top1 in %, count, agreement)."""
    if reference is None:
        why = "no --reference: the original was not evaluated"
        checks = [Check("reference_top1", CheckStatus.NOT_MADE, why), Check("agreement", CheckStatus.NOT_MADE, why)]
    else:
        checks = paired_checks(primary, reference, variant, num_samples, full)
    checks.append(recorded_check(primary, variant, num_samples, full))
    return [_at_least(c, num_samples) for c in checks]


def _at_least(check: Check, n: int) -> Check:
    """No accuracy check passes on fewer than :data:`MIN_IMAGES_TO_PASS` images, with any setting and on the full
    set too (a variant's ``num_samples`` or a suite's ``recorded_images`` could otherwise call 1 image a full set)."""
    if check.status != CheckStatus.PASS or n >= MIN_IMAGES_TO_PASS:
        return check
    return Check(check.name, CheckStatus.NOT_MADE, f"{n} images: a pass needs at least {MIN_IMAGES_TO_PASS} images, "
                 f"whatever the gate's settings ({check.detail})", check.resolution)


def baseline_check(comparison: dict, variant: Variant | None) -> Check:
    """This run against an earlier run's reports on the very same ordered image list (``--baseline``; see
    :mod:`evaluate.verdict.baseline`): a regression is a top-1 drop beyond ``gate.baseline_top1_tolerance`` points, more
    changed top-1 predictions than ``gate.baseline_max_flipped`` (a fraction of the images) allows, or an image of
    the baseline that this run did not evaluate (skipped as bad: the comparison would quietly cover fewer images,
    and the images lost are the ones most likely to have changed); the defaults are in :mod:`evaluate.verdict.gate_settings`.

    Unlike the checks against the original on a subset, this one is made at any number of images: the baseline
    is defined on exactly these images (the two image lists' sha256 are equal), so whether a prediction changed is
    observed, not estimated; ``resolution`` says what a sample of this size would show about the rest of the data.
    It cannot make a gate pass on its own (:func:`verdict`)."""
    g = gate_settings(variant)
    tol, budget = g.baseline_top1_tolerance, g.baseline_max_flipped
    n, flipped, lost = comparison["num_images"], comparison["num_flipped"], comparison.get("only_in_baseline", 0)
    if n <= 0 and not lost:
        return Check("baseline", CheckStatus.NOT_MADE, "no image was evaluated in both runs")
    allowed = math.floor(budget * n + EPS)
    delta = comparison["top1_delta"]
    ok = not lost and delta >= -tol - EPS and flipped <= allowed
    detail = (f"top-1 {delta:+.3f} points vs the baseline (tolerance {tol:g}), McNemar p {comparison['top1_mcnemar_p']:.3g}; "
              f"{flipped} of {n} images changed their top-1 (budget {100 * budget:g}% = {allowed})"
              if n > 0 else "no image was evaluated in both runs")
    if lost:
        detail = (f"{lost} image(s) of the baseline were not evaluated in this run (skipped as bad; listed in "
                  f"report.md), so the comparison does not cover the baseline's images; {detail}")
    resolution = (f"exact on the {n} images both runs evaluated (one image = {100 / n:.3g} points); as a sample of "
                  f"more images, a change on {_pct(detectable_disagreement(n, g.power))}% of them shows with "
                  f"probability {g.power:g}") if n > 0 else ""
    return Check("baseline", CheckStatus.PASS if ok else CheckStatus.FAIL, detail, resolution)


def judge(results: dict, primary: str, reference: str | None, variant: Variant | None, full: bool,
          against: dict | None = None) -> list[Check]:
    """The verdict's own step: the checks of a run, from its measured ``results`` (``{"models": {name:
    ModelResult}}``), the names of its primary and reference rows, its variant, whether it covered the set the
    recorded figure belongs to (``full``) and its comparison with a baseline (:func:`evaluate.verdict.baseline.compare`),
    if any. Nothing here is formatted or written; :func:`verdict` turns the checks into the gate's word."""
    models = results["models"]
    p = models[primary]
    ref = models.get(reference) if reference else None
    if ref is not None and ref.count < p.count:  # the original ran on a sample (evaluate.verdict.reference_sample)
        checks = sampled_checks(p, ref, variant, full)
    else:
        checks = gate_checks(p, ref, variant, p.count, full)
    if against is not None:
        checks.append(baseline_check(against, variant))
    return checks


def sampled_checks(primary, reference, variant: Variant | None, full: bool) -> list[Check]:
    """The paired checks on the images the original ran on (its seeded sample: ``primary.extra["sample_top1"]`` is
    the converted model's top-1 there), the recorded-top-1 check on every image; each detail says which."""
    n, of = reference.count, primary.count
    on_sample = replace(primary, top1=primary.extra["sample_top1"])
    paired = [replace(c, detail=f"on the original's seeded sample of {n} of {of} images: {c.detail}")
              for c in paired_checks(on_sample, reference, variant, n, False)]
    return [*paired, recorded_check(primary, variant, of, full)]


def verdict(checks: list[Check]) -> CheckStatus:
    """"fail" when any check failed; "pass" only when an accuracy check (:data:`ACCURACY_CHECKS`) passed and none
    failed; else "not made" (a baseline check that passed alone included: see the module docstring)."""
    if any(c.status == CheckStatus.FAIL for c in checks):
        return CheckStatus.FAIL
    if any(c.status == CheckStatus.PASS and c.name in ACCURACY_CHECKS for c in checks):
        return CheckStatus.PASS
    return CheckStatus.NOT_MADE
