"""Report files (evaluate.reports.report.write_reports): one unit, the model folder's permissions, the previous
report intact until the new one is complete, never a mix of two runs', the demo's model folder kept."""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from cvt_port.errors import BadInput
from evaluate.reports import report
from evaluate.reports.report import REPORT_FILES, check_output, write_reports


def fake_run(tag: str, n: int = 6):
    """What a run hands write_reports: per-image rows that differ by ``tag``, and a record."""
    rows = [(i, i % 3, {"converted": [(i + len(tag)) % 3, 0, 1, 2, 3]}) for i in range(n)]
    results = {"models": {"converted": SimpleNamespace(per_class=[0.5, 0.25, 1.0])}, "rows": rows}
    record = {"model": tag, "gate": "pass", "checks": [], "num_samples": n,
              "models": [{"name": "converted", "preprocessing": "release", "top1": 50.0, "top5": 100.0,
                          "agreement_with_original": None, "max_abs_logit_diff": None}]}
    image_ids = [f"{tag}-img{i}.JPEG" for i in range(n)]
    return record, results, image_ids


def write(output: Path, tag: str, n: int = 6) -> None:
    record, results, image_ids = fake_run(tag, n)
    write_reports(output, record, results, image_ids, "converted", None, ["a", "b", "c"])


def tags_of(output: Path) -> set[str]:
    """The run each report file came from."""
    found = {json.loads((output / "report.json").read_text())["model"]}
    found.add((output / "report.md").read_text().splitlines()[0].removeprefix("# Evaluation of "))
    with open(output / "predictions.csv", newline="") as fh:
        found |= {row["image_id"].split("-img")[0] for row in csv.DictReader(fh)}
    return found


def test_reports_get_the_model_folders_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write(tmp_path / "out", "a")
    finally:
        os.umask(umask)
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {name: 0o644 for name in REPORT_FILES}


def test_the_previous_report_stays_whole_when_a_run_fails_while_writing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write(out, "first")
    before = {name: (out / name).read_bytes() for name in REPORT_FILES}
    calls = []

    def csv_then_crash(rows):
        calls.append(1)
        if len(calls) == 2:  # report.json and report.md are ready, predictions.csv too: per_class.csv fails
            raise KeyboardInterrupt
        return original(rows)

    original = report.csv_text
    monkeypatch.setattr(report, "csv_text", csv_then_crash)
    with pytest.raises(KeyboardInterrupt):
        write(out, "second")
    assert {name: (out / name).read_bytes() for name in REPORT_FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_a_new_report_replaces_every_file_of_the_previous_one(tmp_path):
    out = tmp_path / "out"
    write(out, "first", n=9)
    write(out, "second", n=4)
    assert tags_of(out) == {"second"} and sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)


def snapshot_tags(output: Path) -> set[str]:
    """The runs the report files of one folder came from, read through one handle on the folder (as a
    reader that opened it sees it, whatever is swapped in meanwhile)."""
    fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY)
    try:
        def read(name):
            with open(name, newline="", opener=lambda path, flags: os.open(path, flags, dir_fd=fd)) as fh:
                return fh.read()

        found = {json.loads(read("report.json"))["model"]}
        found.add(read("report.md").splitlines()[0].removeprefix("# Evaluation of "))
        found |= {line.split("-img")[0] for line in read("predictions.csv").splitlines()[1:]}
        return found
    finally:
        os.close(fd)


def test_two_concurrent_runs_never_show_or_leave_a_mix(tmp_path):
    out = tmp_path / "out"
    write(out, "start")
    errors, seen, done = [], [], threading.Event()

    def run(tag):
        try:
            for j in range(15):
                write(out, f"{tag}{j}", n=300)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watch():
        while not done.is_set():
            try:
                seen.append(snapshot_tags(out))
            except FileNotFoundError:
                seen.append(None)  # a folder opened just before it was replaced and removed: no mix either

    writers = [threading.Thread(target=run, args=(t,)) for t in ("x", "y")]
    reader = threading.Thread(target=watch)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert errors == [] and len(tags_of(out)) == 1
    mixed = [s for s in seen if s is not None and len(s) > 1]
    assert len(seen) > 10 and mixed == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_demos_model_folder_is_kept(tmp_path):
    out = tmp_path / "out"
    model = out / "cvt-tiny-digits-hf"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    inode = (model / "model.safetensors").stat().st_ino
    write(out, "first")
    write(out, "second")
    assert sorted(p.name for p in out.iterdir()) == sorted([*REPORT_FILES, "cvt-tiny-digits-hf"])
    assert (model / "config.json").read_text() == "{}" and (model / "model.safetensors").stat().st_size == 1000
    assert (model / "model.safetensors").stat().st_ino == inode  # linked, not copied


def test_output_folders_that_are_not_the_runs_own_are_refused(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match="holds 'notes.txt'"):
        check_output(tmp_path)
    with pytest.raises(BadInput, match="not a folder"):
        check_output(tmp_path / "notes.txt")
    with pytest.raises(BadInput, match="holds 'notes.txt'"):
        write(tmp_path, "x")
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "report.json").exists()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for here in (Path("."), tmp_path):
        with pytest.raises(BadInput, match="holds the current folder"):
            check_output(here)
    check_output(tmp_path / "new" / "deeper")  # not there yet: fine


def test_a_run_refuses_a_foreign_output_folder_before_its_pass(tmp_path, capsys):
    from cvt_port import convert
    from cvt_port.variants import get_variant
    from evaluate.cli import main
    from evaluate.default import CHECKPOINT, DATA, VARIANT

    model = convert(CHECKPOINT, tmp_path / "model", variant=get_variant(VARIANT), log=lambda m: None)
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["--model", str(model), "--config", VARIANT, "--data", str(DATA), "--output", str(out),
                 "--accelerator", "cpu", "--num-workers", "0"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.strip().splitlines()[-1].endswith("give a new or empty folder")
    assert "Validation" not in captured.out + captured.err  # refused before the pass
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_baseline_comparison_adds_flipped_csv_and_the_next_run_replaces_it(tmp_path):
    """flipped.csv belongs to the run that compared (all its flipped images); a folder holding one is a previous
    run's, and a later run without a baseline leaves none behind (the folder is replaced whole)."""
    from evaluate.verdict.baseline import Baseline, compare

    record, results, image_ids = fake_run("b", n=6)
    before = Baseline(tmp_path, {"subset_sha256": "x"}, {i: (r[1], (r[1], 0, 1, 2, 3)) for i, r in
                                                          zip(image_ids, results["rows"])}, {"report.json": "h"})
    record["baseline"] = {**compare(before, results["rows"], image_ids, "converted"), "environment_differences": {}}
    out = tmp_path / "out"
    write_reports(out, record, results, image_ids, "converted", None, ["a", "b", "c"])
    with open(out / "flipped.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    flipped = [(i, str(r[1]), str(r[2]["converted"][0])) for i, r in zip(image_ids, results["rows"])
               if r[2]["converted"][0] != r[1]]
    assert [(r["image_id"], r["baseline_top1"], r["top1"]) for r in rows] == flipped and flipped
    assert all((r["baseline_correct"], r["correct"]) == ("true", "false") for r in rows)
    md = (out / "report.md").read_text()
    assert f"{len(flipped)} of 6 images changed their top-1" in md and flipped[0][0] in md
    check_output(out)  # a previous run's folder, flipped.csv included
    write(out, "next")
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)


def test_markdown_shows_the_provenance(tmp_path):
    record, results, image_ids = fake_run("p")
    record["provenance"] = {"command": "python -m evaluate --subset 6", "started_utc": "2026-01-01T00:00:00+00:00"}
    text = report.markdown(record)
    assert "| provenance |" in text and "python -m evaluate --subset 6" in text
