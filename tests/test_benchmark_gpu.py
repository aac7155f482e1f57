"""benchmarks/gpu.py, the prepared GPU check of issue 12: its smoke mode runs its whole code path on the CPU (the
tiny CvT, generated photos, the product's run_plan from JPEG and from the cache, the original model as reference)
and gives one table with a row per model and setting and every column filled: numbers where a CPU can measure
them, "-" where it cannot (GPU memory, CUDA synchronisations). The check runs in this process (it times no
process of its own); its command line, ``python -m benchmarks gpu``, runs here too, with a spent budget. No
assertion on any time: figures must be finite; exactness figures must hold."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from benchkit import one_torch_thread

REPO = Path(__file__).resolve().parents[1]
from benchmarks import cli, gpu, gpu_runs, suite  # noqa: E402  (benchmarks/ runs from the checkout: see conftest)
from benchmarks.workspace import Plan  # noqa: E402

SETTINGS = ["fp32", "tf32", "bf16", "sdpa", "compile"]
MEASURED = ["fp32", "tf32", "bf16", "sdpa"]  # compile: skipped in smoke mode, said in its row
IMAGES = 8


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(results, cells by setting) of the smoke mode (``python -m benchmarks gpu --smoke``, in this process)."""
    work = tmp_path_factory.mktemp("gpu-bench")
    with one_torch_thread():
        results = suite.run_benchmarks(["gpu"], Plan.make(tiny=True), work / "absent", work, ["test"])
    return results, {c["setting"]: c for c in results["sections"][gpu.KEY]["cells"]}


def test_smoke_has_one_table_with_a_row_per_setting_and_every_column(smoke):
    r, _ = smoke
    lines = r["table_text"].splitlines()
    assert lines[0].startswith("#") and "figures" in lines[0]
    body = lines[2:]
    assert [ln.split(" | ")[1].split()[1] for ln in body] == SETTINGS
    assert all(ln.split(" | ")[1].startswith("tiny-imagenet-64 ") and "(CPU smoke)" in ln for ln in body)
    for ln in body[:-1]:
        figures = ln.split(" | ")[2]
        for column in ("bare ", "JPEG ", "cache ", "img/s", "max|dlogit| ", "agree ", "peak ", "syncs/step "):
            assert column in figures, (column, ln)
        # CPU: said, not faked
        assert "peak      -/     -/     - GiB" in figures and "syncs/step     -/    -" in figures
        assert "skipped" not in figures and "error" not in figures.lower()
    assert "skipped: smoke mode" in body[-1] and "compile" in body[-1]
    assert any("peak RSS" in n for n in r["notes"])  # what the CPU can say about memory instead


def test_every_cell_has_finite_figures_from_the_product_run_path(smoke):
    r, cells = smoke
    s = r["sections"][gpu.KEY]
    assert r["benchmarks"] == ["gpu"] and s["sizes"]["smoke"] is True and s["device"] == "cpu"
    assert list(cells) == SETTINGS
    assert cells["compile"]["skipped"].startswith("smoke mode")
    for name in MEASURED:
        cell = cells[name]
        assert cell["skipped"] is None
        assert _number(cell["bare"]["images_per_second"]) and cell["bare"]["images_per_second"] > 0
        for kind in ("jpeg", "cache", "reference"):
            run = cell[kind]
            assert _number(run["images_per_second"]) and run["images_per_second"] > 0, (name, kind)
            assert run["num_samples"] == IMAGES and run["steps"] == 2, (name, kind)
            assert run["peak_mib"] is None and run["syncs_per_step"] is None  # no CUDA here
            assert run["gate"] in ("pass", "fail", "not made")
        ref = cell["reference"]
        assert _number(ref["max_abs_logit_diff"]) and _number(ref["agreement"]) and 0 <= ref["agreement"] <= 1
        # the fixture is not trivial: the original model gives the 8 photos several classes
        assert ref["reference_distinct_top1"] >= 4 and cell["cache"]["distinct_top1"] >= 4
    table = {row["benchmark"].split()[1]: row for row in r["table"]}
    fp32 = cells["fp32"]
    assert float(table["fp32"]["ratio"]) == pytest.approx(
        fp32["cache"]["images_per_second"] / fp32["bare"]["images_per_second"], abs=0.006)


def test_converted_vs_reference_under_each_numerics_policy(smoke):
    _, cells = smoke
    diff = {n: cells[n]["reference"]["max_abs_logit_diff"] for n in MEASURED}
    agree = {n: cells[n]["reference"]["agreement"] for n in MEASURED}
    # float32 on the CPU: the conversion is exact; TF32 does not exist on a CPU, so the same
    assert diff["fp32"] <= 1e-5 and agree["fp32"] == 1.0
    assert diff["tf32"] <= 1e-5 and agree["tf32"] == 1.0
    # sdpa reorders float32 sums: tiny differences, same classes
    assert diff["sdpa"] <= 1e-3 and agree["sdpa"] == 1.0
    # bf16 autocast against the float32 original: visibly larger
    assert diff["bf16"] > 1e-3 and diff["bf16"] > 100 * max(diff["fp32"], 1e-7)
    # and each run recorded the policy it ran under (report.json's numerics)
    num = {n: cells[n]["reference"]["numerics"] for n in MEASURED}
    assert num["fp32"]["float32"] == "ieee" and num["tf32"]["float32"] == "tf32"
    assert num["bf16"]["autocast"] == "bfloat16" and num["bf16"]["float32_head"] == ["converted"]
    assert all(num[n]["reference"] == "ieee" for n in MEASURED)
    assert cells["sdpa"]["reference"]["sdpa_backend"] and cells["fp32"]["reference"]["sdpa_backend"] is None


def test_sync_counter_counts_synchronisations_inside_evaluation_steps_only(monkeypatch):
    """The GPU's sync count without a GPU: torch's sync debug mode raises a UserWarning per synchronisation;
    the counter takes those raised under Lightning's evaluation step and lets other warnings through."""
    import torch

    modes = []
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def sync():
        warnings.warn("called a synchronizing CUDA operation", UserWarning)

    def _evaluation_step():  # the name Lightning's loop gives its step
        sync()
        sync()

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with gpu_runs.SyncCounter(True, within=gpu_runs.STEP_FRAMES) as counter:
            sync()  # outside a step: model loading, the epoch's end
            for _ in range(3):
                _evaluation_step()
            warnings.warn("something else", UserWarning)
        with gpu_runs.SyncCounter(True) as everything:
            sync()
            _evaluation_step()
    assert counter.count == 6 and everything.count == 3
    assert [str(w.message) for w in seen] == ["something else"]  # sync warnings counted, not shown
    assert modes == ["warn", 0, "warn", 0]  # debug mode on while counting, restored after
    assert gpu_runs.SyncCounter(False).count is None  # off CUDA: not measurable, said as None


def test_the_gpu_plan_covers_both_variants_every_setting_and_a_budget():
    sz = gpu.Sizes.make(Plan.make(), cuda=True, plan_dir=Path("/nonexistent"))
    assert not sz.smoke and sz.device == "cuda" and sz.compile
    assert [label for label, _ in sz.models] == ["cvt-13-224", "cvt-w24-384-22k"]
    assert sz.batch == {"cvt-13-224": 64, "cvt-w24-384-22k": 32} and sz.budget_s == 240
    assert [s for s, _ in gpu.SETTINGS] == SETTINGS
    assert gpu.Sizes.make(Plan.make(budget_s=100), cuda=True, plan_dir=Path("/x")).budget_s == 100


def test_the_command_line_with_a_spent_budget_skips_cells_says_so_and_cleans_up(tmp_path, capsys):
    """``python -m benchmarks gpu`` (gpu_check.sh's command; in this process): the table on stdout, results.json
    written, the work folder removed; and the check needs no photos (a lent GPU machine has no ../shared/data)."""
    out = tmp_path / "gpu.json"
    rc = cli.main(["gpu", "--smoke", "--budget-s", "0", "--photos", str(tmp_path / "absent"), "--workdir",
                   str(tmp_path / "work"), "--output", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    r = json.loads(out.read_text())
    cells = r["sections"][gpu.KEY]["cells"]
    assert [c["setting"] for c in cells] == SETTINGS
    assert all(c["skipped"].startswith("budget") for c in cells[:-1]) and "smoke" in cells[-1]["skipped"]
    assert r["table_text"] in stdout and f"results: {out}" in stdout
    assert stdout.count("skipped: budget") == len(MEASURED)
    assert "img/s" not in stdout.split("note:")[0]  # nothing was measured
    assert list((tmp_path / "work").iterdir()) == [], "the work folder was not removed"


def test_the_gpu_module_runs_alone_as_a_process():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--bogus"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "python -m benchmarks.gpu" in proc.stderr and "--bogus" in proc.stderr
