"""benchmarks/: `python -m benchmarks --tiny` runs every section, prints its table and writes a complete
results.json whose ratios are computed from its own figures. No assertion on any time: a benchmark reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample-100"

pytestmark = pytest.mark.skipif(not (PHOTOS / "val").is_dir(), reason=f"no photos at {PHOTOS}")

SECTIONS = ("1_harness_overhead", "2_cache", "3_conversion", "4_options", "5_scaling")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ratios(obj, path=""):
    """Every {"numerator", "denominator", "value"} dict in the results, with where it is."""
    if isinstance(obj, dict):
        if {"numerator", "denominator", "value"} <= obj.keys():
            yield path, obj
        for k, v in obj.items():
            yield from _ratios(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _ratios(v, f"{path}[{i}]")


def _check_ratio(r: dict, where: str) -> None:
    assert _number(r["numerator"]) and _number(r["denominator"]) and r["denominator"] != 0, (where, r)
    assert _number(r["value"]), (where, r)
    assert r["value"] == pytest.approx(r["numerator"] / r["denominator"], rel=1e-12), (where, r)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--tiny", "--workdir", str(tmp), "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    return proc, out, tmp


def test_exit_status_table_and_cleanup(tiny_run):
    proc, out, tmp = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("#") and "ratio" in ln and "met" in ln)
    assert set(lines[header + 1]) <= {"-", "+", " "}
    body = lines[header + 2:]
    for num in "12345":
        assert any(ln.startswith(f"{num} |") for ln in body), f"no row of section {num} in\n{proc.stdout}"
    assert f"results: {out}" in proc.stdout
    assert out.is_file()
    assert [p.name for p in tmp.iterdir()] == ["results.json"], "the work folder was not removed"


def test_results_have_every_section_with_figures_and_ratios(tiny_run):
    proc, out, _ = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(SECTIONS) <= set(r["sections"])
    m = r["machine"]
    assert _number(m["cores"]) and m["torch"] and m["device"]
    assert r["table"] and r["table_text"]

    ratios = list(_ratios(r))
    assert len(ratios) >= 10
    for where, rt in ratios:
        if rt["value"] is not None or where.startswith("/sections/4_options/compile"):
            continue
        raise AssertionError(f"ratio {where} was not computed: {rt}")
    for where, rt in ratios:
        if rt["value"] is not None:
            _check_ratio(rt, where)

    s1 = r["sections"]["1_harness_overhead"]
    assert _number(s1["harness"]["median"]) and _number(s1["bare"]["median"])
    assert s1["ratio"]["numerator"] == s1["harness"]["median"]
    assert s1["ratio"]["denominator"] == s1["bare"]["median"]
    assert all(_number(v) for v in s1["harness"]["images_per_second"] + s1["bare"]["cold_images_per_second"])
    assert s1["met"] in (True, False)

    s2 = r["sections"]["2_cache"]
    w = r["config"]["default_num_workers"]
    assert s2["ratio"]["numerator"] == s2["data_path"]["cache_workers0"]["median"]
    assert s2["ratio"]["denominator"] == s2["data_path"][f"jpeg_workers{w}"]["median"]
    assert all(_number(v["median"]) for v in s2["data_path"].values())
    assert s2["predictions_identical"] is True  # exactness, not time: must hold
    assert s2["mismatched_cache_refused"] and all(x["rc"] == 2 and x["refused_as_expected"]
                                                  for x in s2["mismatched_cache_refused"])

    s3 = r["sections"]["3_conversion"]
    assert all(x["rc"] == 0 for x in s3["convert"]["runs"] + s3["baseline"]["runs"])
    assert s3["wall_ratio"]["numerator"] == s3["convert"]["median_wall_s"]
    assert s3["wall_ratio"]["denominator"] == s3["baseline"]["median_wall_s"]
    assert s3["rss_ratio"]["denominator"] == pytest.approx(s3["file_bytes"] / 2**20)
    assert _number(s3["convert"]["max_peak_rss_mib"]) and s3["wall_met"] in (True, False)
    floor = s3["import_floor"]  # the least a converter that runs the converted model pays
    assert all(x["rc"] == 0 for x in floor["runs"]) and len(floor["runs"]) == len(s3["convert"]["runs"])
    assert floor["ratio_to_baseline"]["numerator"] == floor["median_wall_s"]
    assert floor["ratio_to_baseline"]["denominator"] == s3["baseline"]["median_wall_s"]

    s4 = r["sections"]["4_options"]
    assert _number(s4["bf16_mixed"]["median"]) and _number(s4["bf16_mixed"]["agreement_with_original"])
    assert _number(s4["bf16_mixed"]["max_abs_logit_diff_vs_original"])
    assert _number(s4["sdpa"]["median"]) and _number(s4["sdpa"]["max_abs_logit_diff_vs_original"])
    assert s4["sdpa"]["max_abs_logit_diff_vs_original"] <= 1e-5  # exactness, not time: must hold
    assert s4["compile"]["measured"] is False  # --tiny skips it
    assert s4["gpu"] == "no GPU" or isinstance(s4["gpu"], dict)

    s5 = r["sections"]["5_scaling"]
    assert s5["processes"]["devices_2_ddp"]["world_size"] == [2]
    assert s5["processes"]["devices_2_ddp"]["num_samples"] == [r["config"]["images"]]
    assert _number(s5["processes"]["ratio"]["value"])
    assert set(s5["batch_sizes"]["results"]) == {"1", "8", "32", "64"}
    assert all(_number(v["median"]) for v in s5["batch_sizes"]["results"].values())


def test_script_runs_by_path_too():
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--tiny" in proc.stdout and "--repeats" in proc.stdout
