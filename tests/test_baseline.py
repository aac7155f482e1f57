"""``--baseline DIR``: a run compared with an earlier run's reports, image by image, and gated on regressions.

The regression fixture is the bundled digits model (trained: its predictions vary over the ten classes) with two
rows of its classifier swapped: every image it predicted as one of the two classes now gets the other, so the
images that must flip, and the figures that must change, follow from the baseline's own predictions.csv.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cvt_port.errors import BadInput
from cvt_port.provenance import LIBRARIES, git_commit, hub_revision, library_versions, weights_provenance
from cvt_port.variants import load_variant_file
from evaluate.api import PlanError, evaluate_model
from evaluate.verdict.baseline import Baseline, check_same_images, compare, read_baseline
from evaluate.default import CHECKPOINT, DATA
from evaluate.verdict.gate import CheckStatus, baseline_check
from evaluate.verdict.gate_settings import DEFAULTS
from evaluate.verdict.stats import mcnemar_exact
from evalkit import evaluate_cli, evaluate_process, swap_head_classes

REPO = Path(__file__).resolve().parent.parent
SWAP = (3, 8)  # the two head rows swapped in the regression fixture
SUBSET = 120  # 12 images per digit, 4 batches of 32
CPU = dict(accelerator="cpu", num_workers=0, batch_size=32)
CLI_CPU = ["--accelerator", "cpu", "--num-workers", "0", "--batch-size", "32"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def swapped(digits, tmp_path_factory):
    """A copy of the converted folder whose classifier rows (weight and bias) SWAP[0] and SWAP[1] are exchanged."""
    return swap_head_classes(digits, tmp_path_factory.mktemp("swapped") / "hf", *SWAP)


@pytest.fixture(scope="module")
def base(digits, tmp_path_factory):
    """The unmodified model's run on a subset: the baseline every test compares with."""
    out = tmp_path_factory.mktemp("runs") / "base"
    evaluate_model(model=digits, data=DATA, subset=SUBSET, output=out, **CPU)
    return out


def predictions(folder: Path) -> dict[str, dict]:
    with open(folder / "predictions.csv", newline="") as fh:
        return {row["image_id"]: row for row in csv.DictReader(fh)}


def flipped_rows(folder: Path) -> list[dict]:
    with open(folder / "flipped.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- the regression fixture


def test_the_unmodified_model_passes_against_its_own_run(digits, base, tmp_path):
    """The baseline check passes; on its own it makes no gate (a subset of 120 cannot make the accuracy checks)."""
    out = tmp_path / "again"
    result = evaluate_model(model=digits, data=DATA, subset=SUBSET, output=out, baseline=base, **CPU)
    check = next(c for c in result.checks if c["name"] == "baseline")
    assert check["status"] == "pass" and result.verdict == "not made" and result.exit_status == 3
    assert {c["status"] for c in result.checks if c["name"] != "baseline"} == {"not made"}
    b = result.record["baseline"]
    assert (b["num_images"], b["num_flipped"], b["flipped"]) == (SUBSET, 0, [])
    assert (b["top1_delta"], b["top5_delta"], b["top1_mcnemar_p"]) == (0, 0, 1.0)
    assert b["top1"] == b["baseline_top1"] == result.top1 and b["folder"] == str(base.resolve())
    assert b["sha256"]["report.json"] == hashlib.sha256((base / "report.json").read_bytes()).hexdigest()
    assert "weights.sha256" not in b["environment_differences"]  # the same weights
    assert flipped_rows(out) == [] and (out / "flipped.csv").read_text().startswith("image_id,label,baseline_top1")
    md = (out / "report.md").read_text()
    assert "## Compared with the baseline" in md and f"0 of {SUBSET} images changed their top-1" in md


def test_a_model_with_two_head_classes_swapped_fails_and_names_the_flipped_images(swapped, base, tmp_path):
    """On two processes (DDP on CPU): the rows gathered on rank 0 are the ones compared; every rank exits 1."""
    out = tmp_path / "swapped-run"
    r = evaluate_process("--model", swapped, "--data", DATA, "--subset", SUBSET, "--output", out, "--baseline", base,
                         *CLI_CPU, "--devices", "2", "--strategy", "ddp")
    assert r.returncode == 1, r.stderr[-2000:]
    before = predictions(base)
    a, b = SWAP
    other = {a: b, b: a}
    must_flip = {i: row for i, row in before.items() if int(row["pred1"]) in SWAP}
    assert 0 < len(must_flip) < SUBSET  # the fixture changes some images, not all
    rows = flipped_rows(out)
    assert {row["image_id"] for row in rows} == set(must_flip)
    for row in rows:
        was, label = int(must_flip[row["image_id"]]["pred1"]), int(row["label"])
        assert (int(row["baseline_top1"]), int(row["top1"])) == (was, other[was])
        assert (row["baseline_correct"], row["correct"]) == (str(was == label).lower(), str(other[was] == label).lower())
    record = json.loads((out / "report.json").read_text())
    section = record["baseline"]
    assert record["gate"] == "fail" and record["world_size"] == 2
    assert section["num_flipped"] == len(must_flip) and section["num_images"] == SUBSET
    lost = sum(int(row["pred1"]) == int(row["label"]) for row in must_flip.values())
    won = sum(other[int(row["pred1"])] == int(row["label"]) for row in must_flip.values())
    assert section["top1_delta"] == pytest.approx(100 * (won - lost) / SUBSET) and lost > won
    assert section["top1_mcnemar_p"] == pytest.approx(mcnemar_exact(won, lost)) and section["top1_mcnemar_p"] < 1e-3
    # top-5: the swap maps each top-5 list class by class, so the label is in the new list iff its swap was in the old
    swap = lambda c: other.get(c, c)  # noqa: E731
    top5 = lambda row, f: int(row["label"]) in {f(int(row[f"pred{k}"])) for k in range(1, 6)}  # noqa: E731
    changed5 = sum(top5(row, swap) - top5(row, int) for row in before.values())
    assert section["top5_delta"] == pytest.approx(100 * changed5 / SUBSET) and changed5 < 0
    after = predictions(out)
    assert all([after[i][f"pred{k}"] for k in range(1, 6)] == [str(swap(int(row[f"pred{k}"]))) for k in range(1, 6)]
               for i, row in before.items())
    assert section["environment_differences"]["weights.sha256"]["this_run"] == hashlib.sha256(
        (swapped / "model.safetensors").read_bytes()).hexdigest()
    check = next(c for c in record["checks"] if c["name"] == "baseline")
    assert check["status"] == "fail" and f"{len(must_flip)} of {SUBSET} images changed" in check["detail"]
    first = rows[0]
    assert f"flipped: {first['image_id']} (label {first['label']}): {first['baseline_top1']} -> {first['top1']}" in r.stdout
    assert "GATE: FAIL" in r.stdout and "weights.sha256" in r.stdout  # what differs is said on the terminal
    assert first["image_id"] in (out / "report.md").read_text()


def test_images_of_the_baseline_lost_as_bad_images_fail_the_check(digits, tmp_path):
    """Issue 19.1: a baseline on all 360 digits, then 40 files corrupted and ``skip_bad_images``: the comparison
    covered the 320 left and the gate passed. An image of the baseline this run did not evaluate is a failure."""
    data = Path(shutil.copytree(DATA, tmp_path / "val"))
    full = evaluate_model(model=digits, data=data, output=tmp_path / "all", **CPU)
    assert full.verdict == "pass" and full.num_samples == 360
    files = sorted(p for p in data.rglob("*.png"))
    for f in files[::9][:40]:
        f.write_bytes(b"not a png")
    result = evaluate_model(model=digits, data=data, output=tmp_path / "again", skip_bad_images=True,
                            baseline=tmp_path / "all", **CPU)
    check = next(c for c in result.checks if c["name"] == "baseline")
    b = result.record["baseline"]
    assert (b["num_images"], b["only_in_baseline"], b["num_flipped"]) == (320, 40, 0)
    assert check["status"] == "fail" and "40 image(s) of the baseline were not evaluated in this run" in check["detail"]
    assert result.verdict == "fail" and result.exit_status == 1


def test_every_model_kind_and_preprocessing_both_compare_their_primary_row(digits, base):
    """The stock class (exact GELU) under both preprocessings, beside the original: the primary row (stock, release
    preprocessing) is what is compared; on these images GELU changes no prediction (docs/index.md)."""
    result = evaluate_model(model=digits, data=DATA, subset=SUBSET, stock=True, preprocessing="both",
                            reference=CHECKPOINT, baseline=base, **CPU)
    b = result.record["baseline"]
    assert (b["row"], b["baseline_row"]) == ("stock", "converted")
    assert [m["name"] for m in result.record["models"]] == ["stock", "original", "stock (hf)"]
    assert b["num_flipped"] == 0 and next(c for c in result.checks if c["name"] == "baseline")["status"] == "pass"
    assert b["environment_differences"]["preprocessing"] == {"baseline": "release", "this_run": "both"}


# --------------------------------------------------------------------------- refused before the first batch


def broken_model(digits: Path, tmp_path: Path) -> Path:
    """A copy whose weights cannot be loaded: a baseline error reported instead proves it came first."""
    folder = tmp_path / "broken"
    shutil.copytree(digits, folder)
    (folder / "model.safetensors").write_bytes(b"\0" * 100)
    return folder


def test_a_different_image_list_is_refused_naming_both_hashes_before_any_model_loads(digits, base, tmp_path):
    out = tmp_path / "out"
    r = evaluate_cli("--model", broken_model(digits, tmp_path), "--data", DATA, "--subset", 60, "--output", out,
                     "--baseline", base, *CLI_CPU)
    theirs = json.loads((base / "report.json").read_text())["subset_sha256"]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    mine = [h for h in re.findall(r"\b[0-9a-f]{64}\b", lines[0]) if h != theirs]
    assert lines[0].startswith(f"error: --baseline {base.resolve()}: covers other images than this run")
    assert theirs in lines[0] and len(mine) == 1
    assert f"--subset {SUBSET} --seed 0" in lines[0]
    assert not out.exists()


def test_a_missing_baseline_is_refused_before_any_model_loads(digits, tmp_path):
    r = evaluate_cli("--model", broken_model(digits, tmp_path), "--data", DATA, "--subset", 60, "--output",
                     tmp_path / "out", "--baseline", tmp_path / "nowhere", *CLI_CPU)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: --baseline {tmp_path / 'nowhere'}: no such folder; give the --output folder of an earlier run "
        "(it holds report.json and predictions.csv)"]


@pytest.mark.parametrize("damage, named", [
    (lambda d: (d / "report.json").unlink(), "report.json: no such file"),
    (lambda d: (d / "predictions.csv").unlink(), "predictions.csv: no such file"),
    (lambda d: (d / "report.json").write_text("{not json"), "report.json: is not valid JSON"),
    (lambda d: (d / "report.json").write_text("[1, 2]"), "report.json: is not the report.json of"),
    (lambda d: (d / "predictions.csv").write_text("a,b\n1,2\n"), "predictions.csv: is not the predictions.csv of"),
    (lambda d: (d / "predictions.csv").write_text("image_id,label,pred1,pred2\nx,1,two,3\n"),
     "predictions.csv: line 2: a label and 2 class indices expected"),
    (lambda d: (d / "predictions.csv").write_text("image_id,label,pred1\nx,1,2\nx,1,2\n"),
     "predictions.csv: line 3: image id 'x' is listed twice"),
])
def test_a_damaged_baseline_is_one_line_naming_the_file(base, tmp_path, damage, named):
    folder = tmp_path / "copy"
    shutil.copytree(base, folder)
    damage(folder)
    with pytest.raises(PlanError) as info:
        read_baseline(folder)
    assert info.value.fields == ("report.baseline",) and f"{folder}/{named}" in str(info.value)
    assert "\n" not in str(info.value)


def test_the_hint_says_how_to_get_the_baselines_image_list(tmp_path):
    def refused(record: dict) -> str:
        with pytest.raises(PlanError) as info:
            check_same_images(Baseline(tmp_path, {"subset_sha256": "a" * 64, "data": "/d", **record}, {}, {}), "b" * 64)
        return str(info.value)

    assert "data.subset 50 data.seed 7 as the baseline did, on the data it read (/d)" in refused({"subset": 50, "seed": 7})
    assert f"data.subset_file listing the image_id column of {tmp_path}/predictions.csv" in refused({"subset": 50})
    assert "neither data.subset nor data.subset_file" in refused({"subset": None, "seed": None})
    check_same_images(Baseline(tmp_path, {"subset_sha256": "b" * 64}, {}, {}), "b" * 64)  # same list: no error


# --------------------------------------------------------------------------- the comparison and the check


def test_compare_counts_discordant_pairs_for_top1_and_top5_each_run_by_its_own_rows():
    # image: (label, baseline top-5) and this run's top-5
    baseline = Baseline(Path("/b"), {"subset_sha256": "x", "models": [{"name": "converted"}]}, {
        "i0": (1, (1, 2, 3, 4, 5)),  # right -> right (top-1 unchanged)
        "i1": (2, (2, 0, 3, 4, 5)),  # right -> wrong, still in top-5
        "i2": (3, (0, 3, 4, 5, 6)),  # wrong -> right
        "i3": (4, (0, 1, 2, 3, 5)),  # wrong -> wrong (top-1 flips 0 -> 9), top-5 gains the label
        "i4": (5, (5, 1, 2, 3, 4)),  # right -> wrong, top-5 loses the label
        "i5": (6, (6, 0, 1, 2, 3)),  # relabelled 6 -> 7 since: right -> wrong, though top-1 and top-5 are unchanged
        "gone": (6, (6, 0, 1, 2, 3)),  # only in the baseline (skipped as bad in this run)
    }, {})
    rows = [(0, 1, {"m": [1, 2, 3, 4, 5]}), (1, 2, {"m": [0, 2, 3, 4, 5]}), (2, 3, {"m": [3, 0, 4, 5, 6]}),
            (3, 4, {"m": [9, 4, 0, 1, 2]}), (4, 5, {"m": [1, 2, 3, 4, 6]}), (6, 7, {"m": [6, 0, 1, 2, 3]}),
            (5, 7, {"m": [7, 0, 1, 2, 3]}),
            (1, 2, {"m": [0, 2, 3, 4, 5]})]  # a DDP duplicate is counted once
    ids = ["i0", "i1", "i2", "i3", "i4", "new", "i5"]
    s = compare(baseline, rows, ids, "m")
    assert (s["num_images"], s["only_in_baseline"], s["only_in_this_run"], s["labels_differ"]) == (6, 1, 1, 1)
    assert s["top1_discordant"] == {"only_baseline_correct": 3, "only_this_run_correct": 1}
    assert s["top5_discordant"] == {"only_baseline_correct": 2, "only_this_run_correct": 1}
    assert (s["baseline_top1"], s["top1"], s["top1_delta"]) == pytest.approx((400 / 6, 200 / 6, -200 / 6))
    assert (s["baseline_top5"], s["top5"], s["top5_delta"]) == pytest.approx((500 / 6, 400 / 6, -100 / 6))
    assert s["top1_mcnemar_p"] == mcnemar_exact(3, 1) == pytest.approx(0.625) and s["top5_mcnemar_p"] == mcnemar_exact(2, 1)
    assert [(f["image_id"], f["baseline_top1"], f["top1"], f["baseline_correct"], f["correct"]) for f in s["flipped"]] == [
        ("i1", 2, 0, True, False), ("i2", 0, 3, False, True), ("i3", 0, 9, False, False), ("i4", 5, 1, True, False)]
    assert s["num_flipped"] == 4 and s["baseline_row"] == "converted"


def section(n: int, flipped: int, delta: float) -> dict:
    return {"num_images": n, "num_flipped": flipped, "top1_delta": delta, "top1_mcnemar_p": 0.5}


def variant_with(tmp_path: Path, gate: str):
    text = (REPO / "configs" / "cvt-tiny-digits.yaml").read_text()
    path = tmp_path / "v.yaml"
    path.write_text(re.sub(r"(?m)^gate: .*$", f"gate: {gate}", text))
    return load_variant_file(path)


def test_the_baseline_check_fails_a_drop_beyond_tolerance_or_flips_beyond_the_budget(tmp_path):
    # defaults (no variant: a plain Hugging Face folder): 0.1 points, 0.1% of the images
    assert (DEFAULTS.baseline_top1_tolerance, DEFAULTS.baseline_max_flipped) == (0.1, 0.001)
    assert baseline_check(section(50000, 50, -0.1), None).status is CheckStatus.PASS
    assert baseline_check(section(50000, 51, 0.0), None).status is CheckStatus.FAIL
    assert baseline_check(section(50000, 10, -0.102), None).status is CheckStatus.FAIL
    assert baseline_check(section(999, 1, 0.0), None).status is CheckStatus.FAIL  # under 1000 images: none may flip
    assert baseline_check(section(100, 0, 0.0), None).status is CheckStatus.PASS
    assert baseline_check(section(0, 0, 0.0), None).status is CheckStatus.NOT_MADE
    loose = variant_with(tmp_path, "{baseline_top1_tolerance: 1, baseline_max_flipped: 0.01}")  # their bounds
    assert baseline_check(section(100, 1, -1.0), loose).status is CheckStatus.PASS
    assert baseline_check(section(100, 2, 0.0), loose).status is CheckStatus.FAIL
    assert baseline_check(section(100, 0, -1.5), loose).status is CheckStatus.FAIL
    assert baseline_check(section(100, 1, +9.0), loose).status is CheckStatus.PASS  # a gain is no regression


@pytest.mark.parametrize("gate, message", [
    ("{baseline_max_flipped: 2}", "key 'gate.baseline_max_flipped' = 2: must be a fraction of the images from 0 to 0.01"),
    ("{baseline_max_flipped: '0.1'}", "key 'gate.baseline_max_flipped' = '0.1': must be a fraction"),
    ("{baseline_top1_tolerance: lots}", "key 'gate.baseline_top1_tolerance' = 'lots': must be a number of top-1 points"),
    ("{baseline_top1_tolerance: -1}", "key 'gate.baseline_top1_tolerance' = -1: must be a number of top-1 points"),
])
def test_baseline_gate_keys_are_typed_and_range_checked(tmp_path, gate, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        variant_with(tmp_path, gate)


# --------------------------------------------------------------------------- provenance


def test_every_report_records_its_provenance(digits, base):
    record = json.loads((base / "report.json").read_text())
    p = record["provenance"]
    assert p["command"] == f"evaluate_model(model={str(digits)!r}, data={str(DATA)!r}, subset={SUBSET}, " \
                           f"batch_size=32, num_workers=0, accelerator='cpu', output={str(base)!r})"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", p["started_utc"])
    from importlib.metadata import version

    assert p["cvt_port"]["version"] == version("cvt-port")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert p["cvt_port"]["git"]["commit"] == head  # the tests run from a checkout (editable install)
    w = p["weights"]
    assert w["sha256"] == hashlib.sha256((digits / "model.safetensors").read_bytes()).hexdigest()
    assert (w["original_file"], w["original_sha256"]) == (CHECKPOINT.name, hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest())
    assert (w["file"], w["hub_id"], w["hub_revision"]) == ("model.safetensors", None, None)
    assert record["versions"] == library_versions(*LIBRARIES) and set(LIBRARIES) < set(record["versions"])
    assert {"device", "cuda", "driver"} <= set(record["hardware"]) and record["world_size"] == 1
    assert (record["precision"], record["attention"], record["compile"]) == ("32-true", "einsum", False)
    assert record["image_processor"] is None  # release preprocessing: no processor ran


def test_the_cli_records_its_command_line(digits, base, tmp_path):
    r = evaluate_cli("--model", digits, "--data", DATA, "--subset", SUBSET, "--output", tmp_path / "o",
                     "--baseline", base, "--preprocessing", "hf", *CLI_CPU)
    assert r.returncode == 3, r.stderr[-2000:]  # a subset of 120: the accuracy checks are not made
    record = json.loads((tmp_path / "o" / "report.json").read_text())
    assert record["provenance"]["command"] == (f"python -m evaluate --model {digits} --data {DATA} --subset {SUBSET} "
                                               f"--output {tmp_path / 'o'} --baseline {base} --preprocessing hf "
                                               + " ".join(CLI_CPU))
    assert record["image_processor"]["class"] and record["baseline"]["num_flipped"] == 0
    assert "image_processor.class" in record["baseline"]["environment_differences"]
    assert "environment vs the baseline: " in r.stdout and "preprocessing release -> hf" in r.stdout


def test_hub_revision_and_weights_of_a_hub_id_come_from_the_snapshot_loaded(tmp_path, monkeypatch, digits):
    import huggingface_hub.constants as hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--digits"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(digits, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    assert hub_revision("org/digits") == commit and hub_revision("org/absent") is None
    w = weights_provenance("org/digits", False, None)
    assert (w["hub_id"], w["hub_revision"], w["original_sha256"]) == ("org/digits", commit, None)
    assert w["sha256"] == hashlib.sha256((digits / "model.safetensors").read_bytes()).hexdigest()


def test_git_commit_is_silent_outside_a_checkout_of_the_package(tmp_path):
    assert git_commit(tmp_path / "cvt_port") is None  # not a repository
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    inner = tmp_path / "repo" / "venv" / "site-packages" / "cvt_port"  # a wheel in a venv inside some checkout
    inner.mkdir(parents=True)
    assert git_commit(inner) is None
    (repo / "cvt_port").mkdir()  # the checkout's own package folder: its commit
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_commit(repo / "cvt_port") == {"commit": head, "dirty": False}
