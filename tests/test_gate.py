"""The gate passes only when it could have failed: every check states its power, and an
underpowered pass is "not made" with the number of images it needs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from cvt_port.variants import get_variant
from evaluate.gate import CheckStatus, gate_checks, verdict
from evaluate.stats import (
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


def test_images_needed_for_cvt13_is_where_a_one_point_drop_first_fails():
    assert CVT13.detectable_drop == 1.0 and CVT13.reference_top1 == 81.6
    n = images_to_detect_drop(81.6, 1.0)
    assert n == 9962  # the figure docs/gate.md gives
    # at n the 99% interval of a model one point down just excludes 81.6%; one image fewer it does not
    assert detectable_drop(81.6, n) <= 1.0 < detectable_drop(81.6, n - 1)
    # and the full set resolves about half a point (the 99% half-width at 81.6% on 50,000 images)
    assert detectable_drop(81.6, 50000) == pytest.approx(0.446, abs=0.002)


@pytest.mark.parametrize("n", [1, 10, 100, 9961])
def test_a_small_subset_never_passes_the_recorded_check(n):
    # the best case for passing: exactly the recorded accuracy (or as near as n images allow)
    for correct in {round(0.816 * n), max(0, round(0.816 * n) - 1), min(n, round(0.816 * n) + 1)}:
        checks = gate_checks(measured(correct, n), None, CVT13, n, full=False)
        rec = by_name(checks)["recorded_top1"]
        assert rec.status in (CheckStatus.NOT_MADE, CheckStatus.FAIL)
        assert verdict(checks) != CheckStatus.PASS
    rec = by_name(gate_checks(measured(round(0.816 * n), n), None, CVT13, n, full=False))["recorded_top1"]
    if rec.status == CheckStatus.NOT_MADE:
        assert "needs 9962 images" in rec.detail and "\n" not in rec.detail


def test_one_wrong_image_against_81_6_is_not_a_pass():
    checks = gate_checks(measured(0, 1), None, CVT13, 1, full=False)
    assert by_name(checks)["recorded_top1"].status == CheckStatus.NOT_MADE
    assert verdict(checks) == CheckStatus.NOT_MADE


def test_a_powered_subset_passes_at_the_recorded_figure_and_fails_a_point_below():
    n = 9962
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
    assert n < 9962
    rec = by_name(gate_checks(measured(round(0.816 * n), n), None, coarse, n, full=False))["recorded_top1"]
    assert rec.status == CheckStatus.PASS
    rec = by_name(gate_checks(measured(round(0.816 * n), n), None, CVT13, n, full=False))["recorded_top1"]
    assert rec.status == CheckStatus.NOT_MADE and f"needs 9962 images" in rec.detail


def test_paired_checks_report_their_resolution_and_need_power_on_a_subset():
    assert images_to_detect_disagreement(1.0) == 459
    assert detectable_disagreement(459) <= 1.0 < detectable_disagreement(458)
    same = result(81.0, agreement=1.0)
    for n, status in ((10, CheckStatus.NOT_MADE), (458, CheckStatus.NOT_MADE), (459, CheckStatus.PASS)):
        checks = by_name(gate_checks(same, result(81.0), CVT13, n, full=False))
        assert checks["agreement"].status == status and checks["reference_top1"].status == status
        assert "shows with 99% probability" in checks["agreement"].resolution
    # on the full set nothing is sampled: exact, made at any size
    full = by_name(gate_checks(same, result(81.0), CVT13, 360, full=True))
    assert full["agreement"].status == CheckStatus.PASS and "exact" in full["agreement"].resolution
    # a disagreement is a failure at any size
    bad = by_name(gate_checks(result(81.0, agreement=0.9), result(81.0), CVT13, 10, full=False))
    assert bad["agreement"].status == CheckStatus.FAIL


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
