"""Issue 25.5: the gate's words say what it used and where a figure came from. The GATE line states the power and
alpha the checks were judged with (report.json records them as ``gate_settings``), and a suite set that says
``recorded_top1: null`` is named as where the null came from, not the variant config.

One suite run of the bundled digits model: all 360 images (a pass against the variant's figure) and a 120-image
subset whose set records no top-1 (not made), under a variant file with its own power and alpha.
"""

from __future__ import annotations

import json

import yaml

from cvt_port.variants import get_variant
from evaluate.api import evaluate_model
from evaluate.default import DATA, VARIANT

CPU = dict(accelerator="cpu", num_workers=0, batch_size=64)


def test_the_gate_line_states_power_and_alpha_and_a_null_names_its_set(digits, tmp_path, capsys):
    doc = yaml.safe_load(get_variant(VARIANT).path.read_text())
    doc["gate"] = {**doc["gate"], "power": 0.95, "alpha": 0.02}
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump(doc))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"sets": [{"name": "all", "data": str(DATA)},
                                              {"name": "unrecorded", "data": str(DATA), "subset": 120,
                                               "recorded_top1": None}]}))
    result = evaluate_model(model=digits, config=config, suite=suite, output=tmp_path / "out", summary=True, **CPU)
    out = capsys.readouterr().out
    assert [r.verdict for r in result.sets] == ["pass", "not made"]
    gate_line = [line for line in out.splitlines() if line.startswith("GATE:")]
    assert gate_line == [f"GATE: NOT MADE   (the worst of 2 sets; power 0.95, alpha 0.02; reports in {tmp_path / 'out'})"]
    null = {c["name"]: c for c in result.for_set("unrecorded").checks}["recorded_top1"]
    assert null["status"] == "not made"
    assert null["detail"] == f"{suite}: set 'unrecorded' gives recorded_top1: null (no top-1 recorded on this data)"
    assert "variant config" not in out
    one = json.loads((tmp_path / "out" / "all" / "report.json").read_text())
    assert (one["gate_settings"]["power"], one["gate_settings"]["alpha"]) == (0.95, 0.02)

    # a run of one data set: its own GATE line
    alone = evaluate_model(model=digits, config=config, data=DATA, subset=120, seed=1, summary=True, **CPU)
    out = capsys.readouterr().out
    assert alone.verdict == "not made"  # 120 images cannot see a 1-point drop
    assert "GATE: NOT MADE   (power 0.95, alpha 0.02; reports in -)" in out.splitlines()
