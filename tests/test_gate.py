"""The gate passes only when it could have failed: every check states its power, and an
underpowered pass is "not made" with the number of images it needs."""

from __future__ import annotations

import json
import math
from statistics import NormalDist
from types import SimpleNamespace

import pytest

from cvt_port.variants import get_variant
from evaluate.verdict.gate import Check, CheckStatus, gate_checks, judge, verdict
from evaluate.verdict.gate_settings import gate_settings
from evaluate.verdict.stats import (
    detectable_disagreement,
    detectable_drop,
    images_to_detect_disagreement,
    images_to_detect_drop,
    wilson_interval,
)

CVT13 = get_variant("cvt-13-224")


def result(top1: float, agreement: float | None = None):
    return SimpleNamespace(top1=top1, agreement=agreement)


def measured(correct: int, n: int):
    return result(100 * correct / n)


def by_name(checks):
    return {c.name: c for c in checks}


def _exact_power(recorded: float, drop: float, n: int, alpha: float) -> float:
    """The probability that a model whose true top-1 is ``drop`` points below ``recorded`` fails the interval check
    on ``n`` images, summed over the binomial distribution of its correct count (independent of evaluate.verdict.stats:
    the Wilson upper bound from its textbook formula, the binomial pmf from log-gamma)."""
    z = NormalDist().inv_cdf(1 - alpha / 2)
    r, q = recorded / 100, (recorded - drop) / 100
    total = 0.0
    for k in range(n + 1):  # the upper bound grows with k: the failing counts are 0..c
        p = k / n
        upper = (p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
        if upper >= r:
            break
        total += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                          + k * math.log(q) + (n - k) * math.log1p(-q))
    return total


@pytest.mark.parametrize("recorded, drop, power, alpha", [
    (81.6, 1.0, 0.99, 0.01), (81.6, 2.0, 0.99, 0.01), (81.6, 1.0, 0.5, 0.01), (81.6, 1.0, 0.8, 0.05),
    (99.72222222222223, 1.0, 0.99, 0.01), (50.0, 5.0, 0.9, 0.01),
])
def test_images_needed_give_the_claimed_power_by_an_exact_binomial_sum(recorded, drop, power, alpha):
    n = images_to_detect_drop(recorded, drop, alpha, power)
    assert _exact_power(recorded, drop, n, alpha) == pytest.approx(power, abs=0.006)
    assert _exact_power(recorded, drop, int(0.9 * n), alpha) < power  # and not many images more than needed


def test_images_needed_for_cvt13_at_the_default_power():
    assert CVT13.reference_top1 == 81.6 and gate_settings(CVT13).detectable_drop == 1.0
    assert (gate_settings(CVT13).power, gate_settings(CVT13).alpha) == (0.99, 0.01)
    n = images_to_detect_drop(81.6, 1.0)
    assert n == 36788  # the README's figure; 9,962 is the coin toss (power 0.5)
    assert images_to_detect_drop(81.6, 1.0, power=0.5) == 9962
    assert _exact_power(81.6, 1.0, 9962, 0.01) == pytest.approx(0.5, abs=0.01)
    # at n a drop of one point is seen with power 0.99; one image fewer it is not
    assert detectable_drop(81.6, n) <= 1.0 < detectable_drop(81.6, n - 1)
    # and the full set sees 0.86 points at that power (about half a point at power 0.5: the 99% half-width)
    assert detectable_drop(81.6, 50000) == pytest.approx(0.857, abs=0.002)
    assert detectable_drop(81.6, 50000, power=0.5) == pytest.approx(0.446, abs=0.002)


def test_the_check_line_says_the_power_and_alpha_and_the_images_needed():
    rec = by_name(gate_checks(measured(8160, 10000), None, CVT13, 10000, full=False))["recorded_top1"]
    assert rec.status == CheckStatus.NOT_MADE
    assert "with power 0.99, alpha 0.01" in rec.detail and "that needs 36788 images" in rec.detail
    assert "(power 0.99, alpha 0.01)" in rec.resolution
    loose = type(CVT13)(**{**CVT13.__dict__, "gate": {**CVT13.gate, "power": 0.5}})
    rec = by_name(gate_checks(measured(8160, 10000), None, loose, 10000, full=False))["recorded_top1"]
    assert rec.status == CheckStatus.PASS and "power 0.5, alpha 0.01" in rec.resolution


@pytest.mark.parametrize("n", [1, 10, 100, 9962, 36787])
def test_a_small_subset_never_passes_the_recorded_check(n):
    # the best case for passing: exactly the recorded accuracy (or as near as n images allow)
    for correct in {round(0.816 * n), max(0, round(0.816 * n) - 1), min(n, round(0.816 * n) + 1)}:
        checks = gate_checks(measured(correct, n), None, CVT13, n, full=False)
        rec = by_name(checks)["recorded_top1"]
        assert rec.status in (CheckStatus.NOT_MADE, CheckStatus.FAIL)
        assert verdict(checks) != CheckStatus.PASS
    rec = by_name(gate_checks(measured(round(0.816 * n), n), None, CVT13, n, full=False))["recorded_top1"]
    if rec.status == CheckStatus.NOT_MADE:
        assert "needs 36788 images" in rec.detail and "\n" not in rec.detail


def test_one_wrong_image_against_81_6_is_not_a_pass():
    checks = gate_checks(measured(0, 1), None, CVT13, 1, full=False)
    assert by_name(checks)["recorded_top1"].status == CheckStatus.NOT_MADE
    assert verdict(checks) == CheckStatus.NOT_MADE


def test_a_powered_subset_passes_at_the_recorded_figure_and_fails_a_point_below():
    n = 36788
    ok = gate_checks(measured(round(0.816 * n), n), None, CVT13, n, full=False)
    assert by_name(ok)["recorded_top1"].status == CheckStatus.PASS and verdict(ok) == CheckStatus.PASS
    low = gate_checks(measured(round(0.806 * n) - 1, n), None, CVT13, n, full=False)
    assert by_name(low)["recorded_top1"].status == CheckStatus.FAIL and verdict(low) == CheckStatus.FAIL


def test_a_failure_needs_no_power():
    # 10 images all wrong: 81.6% lies outside the 99% interval [0, 34.8]: that is evidence, a failure
    checks = gate_checks(measured(0, 10), None, CVT13, 10, full=False)
    assert wilson_interval(0, 10, 0.99)[1] < 81.6
    assert by_name(checks)["recorded_top1"].status == CheckStatus.FAIL


def test_configured_detectable_drop_sets_the_images_needed():
    v = get_variant("cvt-13-224")
    coarse = type(v)(**{**v.__dict__, "gate": {**v.gate, "detectable_drop": 2.0}})
    n = images_to_detect_drop(81.6, 2.0)
    assert n < 36788
    rec = by_name(gate_checks(measured(round(0.816 * n), n), None, coarse, n, full=False))["recorded_top1"]
    assert rec.status == CheckStatus.PASS
    rec = by_name(gate_checks(measured(round(0.816 * n), n), None, CVT13, n, full=False))["recorded_top1"]
    assert rec.status == CheckStatus.NOT_MADE and "needs 36788 images" in rec.detail


def test_paired_checks_report_their_resolution_and_need_power_on_a_subset():
    assert images_to_detect_disagreement(1.0) == 459
    assert detectable_disagreement(459) <= 1.0 < detectable_disagreement(458)
    same = result(81.0, agreement=1.0)
    for n, status in ((10, CheckStatus.NOT_MADE), (458, CheckStatus.NOT_MADE), (459, CheckStatus.PASS)):
        checks = by_name(gate_checks(same, result(81.0), CVT13, n, full=False))
        assert checks["agreement"].status == status and checks["reference_top1"].status == status
        assert "shows with probability 0.99" in checks["agreement"].resolution
    # on the full set nothing is sampled: exact, made at any size
    full = by_name(gate_checks(same, result(81.0), CVT13, 360, full=True))
    assert full["agreement"].status == CheckStatus.PASS and "exact" in full["agreement"].resolution
    # a disagreement is a failure at any size
    bad = by_name(gate_checks(result(81.0, agreement=0.9), result(81.0), CVT13, 10, full=False))
    assert bad["agreement"].status == CheckStatus.FAIL


def test_the_verdict_needs_an_accuracy_check_a_baseline_alone_is_not_made():
    made = lambda name, status: Check(name, status, "")  # noqa: E731
    base_pass, base_fail = made("baseline", CheckStatus.PASS), made("baseline", CheckStatus.FAIL)
    accuracy_not_made = gate_checks(measured(1, 1), None, CVT13, 1, full=False)
    assert verdict([*accuracy_not_made, base_pass]) == CheckStatus.NOT_MADE
    assert verdict([base_pass]) == CheckStatus.NOT_MADE
    assert verdict([*accuracy_not_made, base_fail]) == CheckStatus.FAIL  # a regression still fails
    assert verdict([made("recorded_top1", CheckStatus.PASS), base_pass]) == CheckStatus.PASS
    assert verdict([made("recorded_top1", CheckStatus.PASS), base_fail]) == CheckStatus.FAIL


def test_judge_returns_the_checks_from_the_results_and_the_baseline_comparison():
    results = {"models": {"converted": SimpleNamespace(top1=81.6, count=36788, agreement=1.0),
                          "original": SimpleNamespace(top1=81.6, count=36788, agreement=None)}}
    against = {"num_images": 36788, "num_flipped": 0, "top1_delta": 0.0, "top1_mcnemar_p": 1.0, "only_in_baseline": 0}
    checks = judge(results, "converted", "original", CVT13, False, against)
    assert [(c.name, c.status) for c in checks] == [
        ("reference_top1", CheckStatus.PASS), ("agreement", CheckStatus.PASS), ("recorded_top1", CheckStatus.PASS),
        ("baseline", CheckStatus.PASS)]
    assert [c.name for c in judge(results, "converted", None, CVT13, False)] == [
        "reference_top1", "agreement", "recorded_top1"]


def test_status_is_an_enum_and_report_json_keeps_its_strings():
    checks = gate_checks(measured(0, 1), None, CVT13, 1, full=False)
    assert all(isinstance(c.status, CheckStatus) for c in checks)
    d = json.loads(json.dumps([c.as_dict() for c in checks]))
    assert {c["status"] for c in d} == {"not made"} and all("resolution" in c for c in d)
    assert json.dumps(verdict(checks).value) == '"not made"'


def test_bundled_default_on_a_10_image_subset_is_not_made(tmp_path):
    """The CLI end to end: the bundled digits (recorded 99.72%) on 10 images: exit 3, each check says why."""
    from evalkit import evaluate_cli

    r = evaluate_cli("--subset", "10", cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "GATE: NOT MADE" in r.stdout
    rep = json.loads((tmp_path / "cvt-port-output" / "report.json").read_text())
    checks = {c["name"]: c for c in rep["checks"]}
    assert rep["num_samples"] == 10 and rep["gate"] == "not made"
    assert {c["status"] for c in checks.values()} == {"not made"}
    needed = images_to_detect_drop(get_variant("cvt-tiny-digits").reference_top1, 1.0)
    assert f"that needs {needed} images" in checks["recorded_top1"]["detail"]
    assert "that needs 459 images" in checks["agreement"]["detail"]
    assert [line for line in r.stdout.splitlines() if "recorded_top1" in line][0].count("needs") == 1
