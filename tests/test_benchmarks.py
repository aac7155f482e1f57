"""benchmarks/: the tiny configuration runs every benchmark and gives a complete results record whose ratios are
computed from its own figures; each benchmark also runs alone; every command it times is a real module.

The timed commands (``python -m evaluate``, ``python -m cvt_port``, ``python -m benchmarks.bare_loop`` ...) run
here through :class:`benchkit.InProcessRunner`: the same module entry with the same arguments, executed in this
process (about a dozen interpreter starts less, each seconds on 2 cores); the runs on 2 processes (DDP) still
go through the benchmarks' real :class:`~benchmarks.timing.ProcessRunner` and its measuring middleman, so that
path is proven too. The photos are generated JPEGs under real WordNet ids (plus a few of the real ImageNet
photos when ../shared/data is there), so the tests run on a bare clone. No assertion on any time: a benchmark
reports; exactness figures must hold. The full sizes stay the defaults of ``python -m benchmarks``."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from benchkit import InProcessRunner, one_torch_thread
from imagegen import make_ilsvrc_imagefolder

from cvt_port.labels import imagenet_wnids

REPO = Path(__file__).resolve().parents[1]
from benchmarks import cli, suite  # noqa: E402  (benchmarks/ runs from the checkout: conftest puts it on the path)
from benchmarks.cache_vs_jpeg import REPORT_FIGURES, compare_reports  # noqa: E402
from benchmarks.workspace import Plan  # noqa: E402

REAL_PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample-100" / "val"
IMAGES = 8
SECTIONS = ("1_harness_overhead", "2_cache", "3_conversion", "4_options", "5_scaling")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _walk(obj, path=""):
    """(where, dict) for every dict in the results."""
    if isinstance(obj, dict):
        yield path, obj
        for k, v in obj.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


def _ratios(results):
    return [(w, d) for w, d in _walk(results) if {"numerator", "denominator", "value"} <= d.keys()]


def _bench(*args, module="benchmarks", timeout=120):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _run(names: list[str], photos: Path, work: Path) -> dict:
    """``python -m benchmarks --tiny NAMES`` in this process (timed commands: :class:`InProcessRunner`)."""
    work.mkdir(parents=True)
    with one_torch_thread():
        return suite.run_benchmarks(names, Plan.make(tiny=True), photos, work, ["test"], runner=InProcessRunner(work))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """An ImageNet-style folder of IMAGES JPEGs: generated ones under real WordNet ids, and 2 real photos in
    addition when they are there."""
    root = tmp_path_factory.mktemp("photos")
    real = sorted(REAL_PHOTOS.glob("*/*.JPEG"))[:2] if REAL_PHOTOS.is_dir() else []
    for src in real:
        (root / "val" / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "val" / src.parent.name / src.name)
    wnids = imagenet_wnids()
    n = IMAGES - len(real)
    make_ilsvrc_imagefolder(root / "val", {wnids[100 + 250 * k]: [2 * k + 1, 2 * k + 2] for k in range(n // 2)})
    assert len(list(root.glob("val/*/*.JPEG"))) == IMAGES
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, photos):
    """(results, work folder) of the default benchmarks on the tiny plan."""
    work = tmp_path_factory.mktemp("bench") / "work"
    return _run(list(suite.DEFAULT), photos, work), work


def test_tiny_run_has_one_row_per_figure_of_every_benchmark(tiny_run):
    r, _ = tiny_run
    lines = r["table_text"].splitlines()
    assert lines[0].startswith("#") and "ratio" in lines[0] and "met" in lines[0]
    assert set(lines[1]) <= {"-", "+", " "}
    body = [ln.split(" | ")[0].strip() for ln in lines[2:]]
    assert body == ["1", "2", "2", "2", "3", "3", "3", "4", "4", "4", "4", "5", "5"]
    assert [row["section"] for row in r["table"]] == body


def test_results_have_every_section_and_ratios_computed_from_their_own_figures(tiny_run):
    r, _ = tiny_run
    assert list(r["sections"]) == list(SECTIONS)
    assert r["benchmarks"] == ["harness_overhead", "cache_vs_jpeg", "conversion", "options", "scaling"]
    assert r["config"]["tiny"] is True and r["config"]["images"] == IMAGES
    assert r["setup"]["images"] == IMAGES and r["setup"]["variant"] == "tiny-imagenet-64"
    m = r["machine"]
    assert _number(m["cores"]) and m["torch"] and m["device"] == "cpu"

    ratios = _ratios(r)
    assert len(ratios) >= 10
    for where, rt in ratios:  # only --compile (skipped by --tiny) may lack its figures
        assert rt["value"] is not None or where.startswith("/sections/4_options/compile"), (where, rt)
        if rt["value"] is not None:
            assert _number(rt["numerator"]) and _number(rt["denominator"]), (where, rt)
            assert rt["value"] == pytest.approx(rt["numerator"] / rt["denominator"], rel=1e-12), (where, rt)


def test_harness_overhead_compares_the_harness_with_the_bare_loop(tiny_run):
    r, _ = tiny_run
    s1 = r["sections"]["1_harness_overhead"]
    (run,) = s1["harness"]["runs"]
    # a random model with no recorded top-1 and no --reference: no check can be made (exit 1 on this main,
    # 3 once the exit-status contract of issue 9 is in); never a crash, never a pass
    assert run["gate"] == "not made" and run["rc"] in (1, 3)
    assert run["num_samples"] == IMAGES and run["world_size"] == 1
    assert s1["ratio"]["numerator"] == s1["harness"]["median"] == run["images_per_second"]
    assert s1["ratio"]["denominator"] == s1["bare"]["median"] == s1["bare"]["cold_images_per_second"][0]
    assert s1["met"] is (s1["ratio"]["value"] >= 0.90)
    assert len(s1["bare"]["runs"][0]["result"]["batch_sizes"]["4"]["pass_ips"]) == 2  # cold and warm
    compare = s1["bare"]["runs"][0]["result"]["compare"]
    assert compare["sdpa_vs_einsum_max_abs_logit_diff"] <= 1e-5 < compare["bf16_vs_fp32_max_abs_logit_diff"]


def test_cache_serves_the_same_predictions_and_report_and_refuses_other_settings(tiny_run):
    r, _ = tiny_run
    s2, w = r["sections"]["2_cache"], r["config"]["num_workers"]
    assert s2["ratio"]["numerator"] == s2["data_path"]["cache_workers0"]["median"]
    assert s2["ratio"]["denominator"] == s2["data_path"][f"jpeg_workers{w}"]["median"]
    assert set(s2["data_path"]) == {f"jpeg_workers{w}", "jpeg_workers0", "cache_workers0", f"cache_workers{w}"}
    assert all(_number(v["median"]) for v in s2["data_path"].values())
    assert s2["met"] is (s2["ratio"]["value"] >= 10)
    assert s2["predictions_identical"] is True
    assert s2["report_figures_identical"] is True
    assert s2["report_comparison"] == {"identical": True, "compared": list(REPORT_FIGURES), "missing": [],
                                       "differing": [], "per_class_csv_identical": True}
    (refusal,) = s2["mismatched_cache_refused"]
    assert refusal["rc"] == 2 and refusal["refused_as_expected"] is True and "cache" in refusal["message"]


def test_compare_reports_reads_what_report_json_holds(tiny_run, tmp_path):
    """On the tiny run's own outputs: same figures are the same; a changed figure, a figure missing from both
    reports, or another per_class.csv is not."""
    _, work = tiny_run
    jpeg, cache = work / "runs" / "s1-jpeg-fp32-r0", work / "runs" / "s2-cache-fp32"
    report = json.loads((jpeg / "report.json").read_text())
    assert set(REPORT_FIGURES) <= set(report)
    assert compare_reports(jpeg, cache)["identical"] is True

    def variant(name, edit):
        folder = tmp_path / name
        shutil.copytree(cache, folder)
        edit(folder)
        return folder

    def set_report(folder, change):
        rep = json.loads((folder / "report.json").read_text())
        change(rep)
        (folder / "report.json").write_text(json.dumps(rep))

    other_top1 = variant("top1", lambda f: set_report(f, lambda rep: rep.update(top1=rep["top1"] + 12.5)))
    assert compare_reports(jpeg, other_top1) == {**compare_reports(jpeg, cache), "identical": False,
                                                 "differing": ["top1"]}
    without = [variant(f"no-top5-{i}", lambda f: set_report(f, lambda rep: rep.pop("top5"))) for i in (1, 2)]
    c = compare_reports(*without)
    assert c["identical"] is False and c["missing"] == ["top5"]
    per_class = variant("per-class", lambda f: (f / "per_class.csv").write_text("class,top1\n"))
    c = compare_reports(jpeg, per_class)
    assert c["identical"] is False and c["per_class_csv_identical"] is False and c["differing"] == []


def test_conversion_and_options_record_their_figures(tiny_run):
    r, _ = tiny_run
    s3 = r["sections"]["3_conversion"]
    assert s3["variant"] == "tiny-imagenet"
    assert [x["rc"] for x in s3["convert"]["runs"] + s3["baseline"]["runs"] + s3["import_floor"]["runs"]] == [0, 0, 0]
    assert s3["convert"]["runs"][0]["parity_max_abs_logit_diff"] <= 1e-5
    assert s3["baseline"]["runs"][0]["output_bytes"] > 0
    assert s3["wall_ratio"]["numerator"] == s3["convert"]["median_wall_s"]
    assert s3["wall_ratio"]["denominator"] == s3["baseline"]["median_wall_s"]
    assert s3["wall_met"] is (s3["wall_ratio"]["value"] <= 1.5)
    assert s3["rss_ratio"]["denominator"] == pytest.approx(s3["file_bytes"] / 2**20)
    assert s3["rss_met"] is False  # a python process with torch is far larger than a 1 MiB file
    floor = s3["import_floor"]
    assert floor["ratio_to_baseline"]["numerator"] == floor["median_wall_s"]
    assert floor["ratio_to_baseline"]["denominator"] == s3["baseline"]["median_wall_s"]

    s4 = r["sections"]["4_options"]
    bf16, sdpa = s4["bf16_mixed"], s4["sdpa"]
    assert bf16["reference_run"]["precision"] == "bf16-mixed" and sdpa["reference_run"]["attention"] == "sdpa"
    assert 0 < bf16["max_abs_logit_diff_vs_original"] and 0.5 <= bf16["agreement_with_original"] <= 1
    assert 0.5 <= bf16["top1_agreement_with_fp32_run"] <= 1
    assert sdpa["max_abs_logit_diff_vs_original"] <= 1e-5 and sdpa["met"] is True
    assert sdpa["reference_run"]["gate"] != "fail" and sdpa["reference_run"]["rc"] != 1  # converted = original
    assert sdpa["einsum_max_abs_logit_diff_vs_original"] == 0  # the exact conversion, einsum attention
    assert s4["compile"] == {"measured": False, "note": "skipped (--tiny or --no-compile)"}
    assert s4["gpu"] == "no GPU"


def test_scaling_runs_two_processes_and_every_batch_size(tiny_run):
    r, _ = tiny_run
    s5 = r["sections"]["5_scaling"]
    ddp = s5["processes"]["devices_2_ddp"]
    assert ddp["world_size"] == [2] and ddp["num_samples"] == [IMAGES]
    assert s5["processes"]["ratio"]["denominator"] == r["sections"]["1_harness_overhead"]["harness"]["median"]
    (run,) = ddp["runs"]  # a real process under the measuring middleman (benchmarks.measure)
    assert run["cmd"][:3] == [sys.executable, "-m", "evaluate"] and run["rc"] in (1, 3)
    assert run["peak_rss_mib"] > 100 and run["cpu_s"] > 0 and run["wall_s"] > 0 and run["orphans_reaped"] >= 0
    sweep = s5["batch_sizes"]["results"]
    assert list(sweep) == ["1", "4", "8"] and all(_number(v["median"]) for v in sweep.values())
    assert max(v["relative_to_best"]["value"] for v in sweep.values()) == 1.0


def test_every_timed_process_is_a_real_module(tiny_run):
    r, _ = tiny_run
    commands = [d["cmd"] for _, d in _walk(r["sections"]) if "cmd" in d]
    assert len(commands) >= 12
    modules = {cmd[2] for cmd in commands}
    assert modules == {"evaluate", "cvt_port", "benchmarks.bare_loop", "benchmarks.baseline_convert",
                       "benchmarks.import_floor"}
    for cmd in commands:
        assert cmd[0] == sys.executable and cmd[1] == "-m" and "-c" not in cmd, cmd
        assert importlib.util.find_spec(cmd[2]) is not None, cmd


def test_one_benchmark_runs_alone(tmp_path, photos):
    r = _run(["conversion"], photos, tmp_path / "work")
    assert list(r["sections"]) == ["3_conversion"] and r["benchmarks"] == ["conversion"]
    assert "setup" not in r  # the conversion makes its own checkpoint
    assert [row["section"] for row in r["table"]] == ["3", "3", "3"]
    assert r["sections"]["3_conversion"]["convert"]["runs"][0]["parity_max_abs_logit_diff"] <= 1e-5


def test_several_models_in_one_job_against_separate_runs(tmp_path, photos):
    """benchmarks.multi_model (by name only: not in the default run): three models in one job and one run per model,
    on the JPEGs and on the cache; each model's top-1 the same both ways, the ratio from the measured walls."""
    r = _run(["multi_model"], photos, tmp_path / "work")
    assert list(r["sections"]) == ["6_multi_model"] and [row["section"] for row in r["table"]] == ["6", "6"]
    s = r["sections"]["6_multi_model"]
    for side in (s["jpeg"], s["cache"]):
        assert side["figures_identical"] and len(side["top1_job"]) == 3 and side["top1_job"] == side["top1_alone"]
        assert side["ratio"]["value"] == pytest.approx(side["separate_wall_s"] / side["job_wall_s"], rel=1e-3)
        assert side["job"]["cmd"].count("--model") == 3 and all(a["cmd"].count("--model") == 1 for a in side["alone"])
    assert s["cache_build"]["rc"] == 0 and "--cache-dir" in s["cache"]["job"]["cmd"]


def test_cache_stat_records_the_full_stat_beside_the_old_probes(tmp_path, photos):
    """benchmarks.cache_stat (by name only; --tiny: 2,000 files): the figures it reports are its own, nothing changed
    is found in files nobody touched, and the ratio is computed from the two medians (the time itself is not judged
    here: tests do not time things)."""
    r = _run(["cache_stat"], photos, tmp_path / "work")
    s = r["sections"]["7_cache_stat"]
    assert (s["files"], s["probes"]) == (2000, 32) and [row["section"] for row in r["table"]] == ["7"]
    assert s["changed_found"] == 0 and s["content_changed_found"] is None
    assert s["ratio_full_to_probes"]["value"] == pytest.approx(s["median_full_stat_s"] / s["median_probe_stat_s"])


def test_the_scale_benchmark_measures_every_pass_and_every_process_at_each_size(tmp_path, photos):
    """Issue 26.1, the tiny version of ``python -m benchmarks scale``: an ImageNet-shaped set made in place (10
    classes, 4 images a class), every pass with the peak RSS of each process (both ranks and their DataLoader
    workers on 2 processes), the cache's and the reports' sizes, and the time to the first image scored. One size
    (each size is a dozen real runs); the slopes are computed here from that size and two more made up from it with
    a known growth, which the least-squares slopes must give back."""
    import copy

    from benchmarks.scale import summary
    from benchmarks.synthetic.imagenet_scale import image_name

    r = _run(["scale"], photos, tmp_path / "work")
    s = r["sections"]["7_scale"]
    data = Path(s["data"])
    assert sorted(p.name for p in (data / "images" / "val").iterdir()) == imagenet_wnids()[:10]
    assert (data / "set-4" / "val" / imagenet_wnids()[3] / image_name(3, 3)).samefile(
        data / "images" / "val" / imagenet_wnids()[3] / image_name(3, 3))  # a size is links to the one set
    assert s["set"]["images"] == 40 and s["set"]["bytes"] > 40 * 1000
    assert [z["images"] for z in s["sizes"]] == s["summary"]["images"] == [40]
    size = s["sizes"][0]
    n = size["images"]
    for name in ("jpeg_1", "jpeg_2", "cache_1", "cache_2"):
        run = size[name]
        assert run["num_samples"] == n and run["report_bytes"] > run["report_json_bytes"] > 0, (name, run)
        roles = {p["role"] for p in run["processes"]}
        # every process measured; a rank (torch imported) is past 50 MiB, a worker may be sampled as it forks
        assert all(_number(p["peak_rss_mib"]) and p["peak_rss_mib"] > 0 for p in run["processes"]), \
            [p for p in run["processes"] if not (_number(p["peak_rss_mib"]) and p["peak_rss_mib"] > 0)]
        assert all(p["peak_rss_mib"] > 50 for p in run["processes"] if p["role"].startswith("rank")), run["processes"]
        assert {"rank 0"} <= roles and (name.endswith("_1") or {"rank 1", "worker of rank 0", "worker of rank 1"}
                                        <= roles), (name, roles)
    assert size["cache_build"]["rc"] == 0 and size["cache_bytes"] >= 64 * 64 * 3 * n  # uint8 pixels, 64x64
    for kind in ("jpeg", "cache"):
        marks = size[f"first_batch_{kind}"]["marks"]
        assert marks["images"] == n and 0 <= marks["inputs_s"] < marks["first_batch_s"], marks
    ref = size["reference"]
    assert ref["reference_all"]["num_samples"] == ref["reference_sample"]["num_samples"] == n
    assert s["summary"]["jpeg_1"]["wall_slope_s_per_image"] is None  # one size: no slope claimed
    assert [row["section"] for row in r["table"]] == ["7"] * 9

    # Two more sizes made up from the measured one: 3n and 5n images, each pass 0.5 s and each process 2 MiB more
    # per n images, and cache 150 bytes an image more: the slopes are 0.5/n s, 2*1024/n KiB and 150 B an image.
    def grown(k):
        g = copy.deepcopy(size)
        g["images"] = k * n
        for name in ("jpeg_1", "jpeg_2", "cache_build", "cache_1", "cache_2"):
            g[name]["wall_s"] += 0.5 * (k - 1)
            for p in g[name]["processes"]:
                p["peak_rss_mib"] += 2 * (k - 1)
            if k == 3:  # a helper program a rank ran, seen at one size only: listed, but no slope of its own
                g[name]["processes"].append({"role": "other (ldconfig)", "pid": 1, "peak_rss_mib": 0.4})
        g["cache_bytes"] += 150 * n * (k - 1)
        return g

    sm = summary([size, grown(3), grown(5)])
    assert sm["images"] == [n, 3 * n, 5 * n]
    for name in ("jpeg_1", "jpeg_2", "cache_build", "cache_1", "cache_2"):
        assert sm[name]["wall_slope_s_per_image"] == pytest.approx(0.5 / n)
        assert sm[name]["seconds_per_image"][1] == pytest.approx((size[name]["wall_s"] + 1.0) / (3 * n))
        assert set(sm[name]["rss_slope_kib_per_image"]) == {p["role"] for p in size[name]["processes"]
                                                            if not p["role"].startswith("other")}
        assert all(v == pytest.approx(2 * 1024 / n, abs=1e-3) for v in sm[name]["rss_slope_kib_per_image"].values())
    assert sm["cache_slope_bytes_per_image"] == pytest.approx(150)


def test_the_scale_set_grows_in_place_and_each_size_is_links_to_it(tmp_path):
    """The scale set writes only the files still missing (the 1-per-class set is part of the 2-per-class one) and
    a size's folder is hard links to those files, so a walk sees the real files and nothing is written twice."""
    from benchmarks.synthetic.imagenet_scale import ensure_scale_set, image_name, linked_set

    root = tmp_path / "images"
    first = ensure_scale_set(root, 1, classes=3)
    assert (first["images"], first["written_now"]) == (3, 3)
    one = root / "val" / imagenet_wnids()[2] / image_name(0, 2)
    stamp = (one.stat().st_ino, one.stat().st_mtime_ns)
    second = ensure_scale_set(root, 2, classes=3)
    assert (second["images"], second["written_now"]) == (6, 3) and second["bytes"] > first["bytes"]
    assert (one.stat().st_ino, one.stat().st_mtime_ns) == stamp  # kept, not rewritten
    assert ensure_scale_set(root, 2, classes=3) == second  # recorded: nothing written, nothing walked
    small = linked_set(root, tmp_path / "set-1", 1, classes=3)
    assert sorted(p.name for p in (small / "val").iterdir()) == imagenet_wnids()[:3]
    assert [len(list(d.iterdir())) for d in sorted((small / "val").iterdir())] == [1, 1, 1]
    assert (small / "val" / imagenet_wnids()[2] / image_name(0, 2)).samefile(one)


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    """(real processes: the package's and a benchmark module's own entry points)"""
    proc = _bench("nonsense")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: unknown benchmark 'nonsense': choose from harness_overhead, cache_vs_jpeg, conversion, options, "
        "scaling, multi_model, cache_stat, scale, compile_cpu, gpu, startup"]
    proc = _bench("--photos", tmp_path / "absent")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--photos" in proc.stderr
    proc = _bench("--bogus", module="benchmarks.conversion")
    assert proc.returncode == 2 and "python -m benchmarks.conversion" in proc.stderr and "--bogus" in proc.stderr


def test_the_command_line_is_the_only_module_that_parses_flags():
    """argparse only where flags are parsed: the package's command line and the timed processes' entry points."""
    parsers = sorted(f.name for f in (REPO / "benchmarks").glob("*.py") if "argparse" in f.read_text())
    assert parsers == ["bare_loop.py", "cli.py"]
    assert "argparse" not in (REPO / "benchmarks" / "synthetic" / "checkpoints.py").read_text()


def test_startup_benchmark_times_each_refusal_beside_import_torch(tmp_path):
    """benchmarks.startup (by name only): real processes under the measuring middleman; each refusal is exit 2 with
    its one line, and its ratio is computed from the run's own medians."""
    r = suite.run_benchmarks(["startup"], Plan.make(tiny=True), tmp_path / "no-photos", tmp_path, ["test"])
    s = r["sections"]["7_startup"]
    assert s["exit_statuses"] == {"import_torch": [0], "devices_in_step": [2], "batch_step": [2]}
    assert [run["stderr_lines"][0].split(":")[:2] for run in (s["runs"]["devices_in_step"][0], s["runs"]["batch_step"][0])] \
        == [["error", " --devices 4"], ["error", " SLURM_NTASKS=2"]]
    assert all(len(run["stderr_lines"]) == 1 for name in ("devices_in_step", "batch_step") for run in s["runs"][name])
    for name, rt in s["ratios"].items():
        assert rt["numerator"] == s["median_wall_s"][name] and rt["denominator"] == s["median_wall_s"]["import_torch"]
        assert rt["value"] == rt["numerator"] / rt["denominator"]
    assert [row["benchmark"] for row in r["table"]] == ["refusal at start-up (devices_in_step)",
                                                        "refusal at start-up (batch_step)"]


def test_a_helper_program_a_rank_starts_is_not_listed_as_a_rank():
    """A program a rank starts (``ldconfig``, a shell) inherits ``LOCAL_RANK`` from it; it was listed as one more
    "rank 0" of a few hundred KiB, which the scale test read as a rank that never loaded torch (a flaky failure in
    CI). Only a Python interpreter is a rank; the helper is listed as what it is."""
    import time

    from benchmarks.proc_peaks import TreePeaks

    env = dict(os.environ, LOCAL_RANK="0")
    helper = subprocess.Popen(["sleep", "30"], env=env)
    rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=dict(env, LOCAL_RANK="1"))
    try:
        peaks = TreePeaks(os.getpid())
        deadline = time.monotonic() + 30
        while True:  # until both have exec'd their programs
            peaks.poll()
            comms = {pid: r["comm"] for pid, r in peaks.seen.items()}
            if comms.get(helper.pid) == "sleep" and comms.get(rank.pid, "").startswith("python"):
                break
            assert time.monotonic() < deadline, comms
            time.sleep(0.05)
        roles = {p["pid"]: p["role"] for p in peaks.processes()}
        assert roles[helper.pid] == "other (sleep)" and roles[rank.pid] == "rank 1", roles
    finally:
        for p in (helper, rank):
            p.kill()
            p.wait()


def test_a_process_seen_only_after_it_ended_is_not_listed_as_measured():
    """A process that ended before a poll read its memory (a zombie: its status has no VmHWM any more) was listed
    with a peak of 0 MiB, which the scale test then read as a process not measured (a flaky failure). Only a
    process read alive is listed, with its kernel high-water mark."""
    import time

    from benchmarks.proc_peaks import TreePeaks

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{gone.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # ended, not yet waited for: a zombie
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.05)
        peaks = TreePeaks(os.getpid())
        peaks.poll()
        listed = {p["pid"]: p["peak_rss_mib"] for p in peaks.processes()}
        assert gone.pid not in listed, listed
        assert listed[alive.pid] > 1, listed  # a live interpreter: its own high-water mark
    finally:
        alive.kill()
        alive.wait()
        gone.wait()
