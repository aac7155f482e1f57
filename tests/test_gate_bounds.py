"""Issue 25.2: no setting undoes "a 1- or 10-image subset never passes". The gate's settings are bounded to what a
gate can mean (cvt_port.variants.GATE_BOUNDS), refused past them from every way in (a variant file, a suite file,
the plan's ``data.gate``; there is no gate flag) with one line before any model is loaded, and no pass is made on
fewer than MIN_IMAGES_TO_PASS images with any setting inside them.

The runs are the bundled digits model (trained: 99.7% on its 360 images) and its original on class-balanced subsets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from cvt_port.errors import BadInput
from cvt_port.variants import get_variant
from evaluate.api import DataSpec, EvalPlan, ModelSpec, ReportSpec, RunSpec, evaluate_model, run_plan
from evaluate.default import CHECKPOINT, DATA, VARIANT
from evaluate.verdict.gate import CheckStatus, gate_checks, verdict
from evaluate.verdict.gate_settings import MIN_IMAGES_TO_PASS
from evalkit import evaluate_cli

CPU = dict(accelerator="cpu", num_workers=0, batch_size=64)
# one value past each bound (and the issue's own: a 100-point "detectable drop")
OUT_OF_BOUNDS = [("detectable_drop", 100), ("detectable_drop", 5.5), ("power", 0.5), ("power", 0.89),
                 ("alpha", 0.2), ("top1_tolerance", 2), ("min_agreement", 0.9), ("baseline_top1_tolerance", 5),
                 ("baseline_max_flipped", 0.5)]
LOOSEST = {"detectable_drop": 5, "power": 0.9, "alpha": 0.05, "top1_tolerance": 1, "min_agreement": 0.99}


def variant_file(path: Path, **gate) -> Path:
    doc = yaml.safe_load(get_variant(VARIANT).path.read_text())
    doc["gate"] = {**doc.get("gate", {}), **gate}
    path.write_text(yaml.safe_dump(doc))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("key, value", OUT_OF_BOUNDS)
def test_every_setting_past_its_bound_is_refused_from_every_way_in(key, value, digits, tmp_path, nothing_loaded):
    config = variant_file(tmp_path / "loose.yaml", **{key: value})
    with pytest.raises(BadInput) as caught:
        evaluate_model(model=digits, config=config, data=DATA, subset=1, **CPU)
    assert str(caught.value).startswith(f"{config}: key 'gate.{key}' = {value}: must be") and "\n" not in str(caught.value)

    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"sets": [{"name": "s", "data": str(DATA), "subset": 10, "gate": {key: value}}]}))
    with pytest.raises(BadInput, match=f"^{suite}: set 's': key 'gate.{key}' = {value}: must be"):
        evaluate_model(model=digits, config=VARIANT, suite=suite, **CPU)

    plan = EvalPlan(ModelSpec(model=str(digits), config=VARIANT),
                    DataSpec(source=str(DATA), subset=10, gate=((key, value),)), RunSpec(**CPU), ReportSpec(output=None))
    with pytest.raises(BadInput, match=f"^data.gate: key 'gate.{key}' = {value}: must be"):
        run_plan(plan)


def test_subset_1_with_update_card_and_a_100_point_drop_is_refused_and_the_card_kept(digits, tmp_path):
    """The issue's case: it passed, and the card said num_images: 1."""
    config = variant_file(tmp_path / "drop100.yaml", detectable_drop=100)
    card = Path(digits) / "README.md"
    before = sha256(card)
    r = evaluate_cli("--model", digits, "--config", config, "--data", DATA, "--subset", "1", "--update-card",
                     "--output", tmp_path / "out", "--accelerator", "cpu", "--num-workers", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "gate.detectable_drop" in r.stderr, r.stderr
    assert "must be a number of top-1 points > 0 and <= 5" in r.stderr
    assert sha256(card) == before and not (tmp_path / "out").exists()


def test_a_suite_set_of_10_images_with_a_50_point_drop_is_refused(digits, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"sets": [{"name": "ten", "data": str(DATA), "subset": 10,
                                               "gate": {"detectable_drop": 50}}]}))
    r = evaluate_cli("--model", digits, "--config", VARIANT, "--suite", suite, "--output", tmp_path / "out",
                     "--accelerator", "cpu", "--num-workers", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: {suite}: set 'ten': key 'gate.detectable_drop' = 50: must be")


@pytest.mark.parametrize("n", [1, 10, 50, MIN_IMAGES_TO_PASS - 1])
@pytest.mark.parametrize("full", [False, True])
def test_no_pass_below_the_floor_whatever_a_variant_says(n, full):
    """Even a variant made in code, past every bound (which no file can say), passes nothing on fewer images; on
    the full set too (a variant's num_samples could call one image a full set)."""
    v = get_variant("cvt-13-224")
    loose = type(v)(**{**v.__dict__, "gate": {"detectable_drop": 99, "power": 0.5, "alpha": 0.49, "top1_tolerance": 100,
                                              "min_agreement": 0.01}, "reference": {"top1": 100.0, "num_samples": n}})
    right = type("R", (), {"top1": 100.0, "agreement": 1.0})()
    checks = gate_checks(right, right, loose, n, full=full)
    assert [c.status for c in checks] == [CheckStatus.NOT_MADE] * 3 and verdict(checks) == CheckStatus.NOT_MADE
    assert all(f"a pass needs at least {MIN_IMAGES_TO_PASS} images" in c.detail for c in checks)
    at_floor = gate_checks(right, right, loose, MIN_IMAGES_TO_PASS, full=full)
    assert verdict(at_floor) == CheckStatus.PASS


def test_at_the_loosest_settings_80_images_are_not_made_and_the_floor_passes(digits, tmp_path):
    """Inside the bounds the power rule alone would pass 80 of the digits (a 5-point drop below 99.7% shows at 63
    images with power 0.9, alpha 0.05; a change on 5% of the images at 45): the floor makes it not made (exit 3)."""
    config = variant_file(tmp_path / "loosest.yaml", **LOOSEST)
    small = evaluate_model(model=digits, config=config, data=DATA, reference=CHECKPOINT, subset=80, **CPU)
    assert small.verdict == "not made" and int(small.exit_status) == 3 and small.num_samples == 80
    assert 95 <= small.top1 <= 100  # the model is right on (nearly) every digit: the power rule alone would pass
    assert all(f"a pass needs at least {MIN_IMAGES_TO_PASS} images" in c["detail"] for c in small.checks), small.checks
    enough = evaluate_model(model=digits, config=config, data=DATA, subset=MIN_IMAGES_TO_PASS, **CPU)
    assert enough.verdict == "pass" and enough.num_samples == MIN_IMAGES_TO_PASS  # the floor, and no higher
    assert {c["name"]: c["status"] for c in enough.checks}["recorded_top1"] == "pass"
