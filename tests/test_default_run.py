"""`python -m evaluate` with no arguments: the bundled end-to-end run, offline, on real trained weights."""

from __future__ import annotations

import csv
import json
import os

import pytest

from cvt_port.variants import get_variant
from evalkit import evaluate_cli, evaluate_process


@pytest.mark.parametrize("network", ["HF_HUB_OFFLINE=1", "hub unreachable"])
def test_default_run_end_to_end(tmp_path, network):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    if network == "HF_HUB_OFFLINE=1":
        env["HF_HUB_OFFLINE"] = "1"
    else:  # online mode, but every Hub address goes nowhere: any network use would fail the run
        env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf-home"),
                   HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    # huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT when imported: online mode needs a new process
    r = (evaluate_cli if network == "HF_HUB_OFFLINE=1" else evaluate_process)(cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "cvt-port-output"
    rep = json.loads((out / "report.json").read_text())
    variant = get_variant("cvt-tiny-digits")

    # 1. converted with its self-check
    facts = json.loads((out / "cvt-tiny-digits-hf" / "conversion.json").read_text())
    assert facts["parity"]["max_abs_logit_diff"] <= 1e-5
    # 2. one pass: original, converted (exact), stock class
    rows = {m["name"]: m for m in rep["models"]}
    assert set(rows) == {"original", "converted", "stock"}
    assert rows["stock"]["max_abs_logit_diff"] > rows["converted"]["max_abs_logit_diff"]
    # 3. table and verdict shown, reports written
    assert "| converted | release |" in r.stdout and "GATE: PASS" in r.stdout
    assert (out / "report.md").exists() and rep["gate"] == "pass"
    assert rep["num_samples"] == variant.reference["num_samples"] and rep["full_dataset"]
    assert rep["top1"] == pytest.approx(variant.reference_top1) and rep["top1"] >= 90
    assert rep["agreement"] == 1.0 and rep["max_abs_logit_diff"] <= 1e-5
    # 4. the exact conversion matches the original prediction for prediction
    with open(out / "predictions.csv", newline="") as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == rep["num_samples"]
    assert all(p["pred1"] == p["reference_top1"] for p in preds)
    # the progress bar ran
    assert "Validation" in r.stdout + r.stderr


def test_the_demo_is_a_plan_like_any_other(tmp_path):
    from evaluate.default import CHECKPOINT, DATA, VARIANT, demo_plan
    from evaluate.plan import DataSpec, EvalPlan, ReportSpec, RunSpec

    plan = demo_plan(DataSpec(subset=20), RunSpec(batch_size=8), ReportSpec(output=tmp_path / "out"))
    assert isinstance(plan, EvalPlan)
    assert plan.models.model == str(tmp_path / "out" / f"{VARIANT}-hf") and plan.models.config == VARIANT
    assert plan.models.reference == CHECKPOINT and plan.models.with_stock and not plan.models.stock
    assert plan.data.source == str(DATA) and plan.data.subset == 20  # the caller's data choices are kept
    assert plan.run.batch_size == 8 and plan.report.output == tmp_path / "out"
    assert (tmp_path / "out" / f"{VARIANT}-hf" / "model.safetensors").is_file()  # converted, ready to run
