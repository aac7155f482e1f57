"""A folder holding several release files converts in one call: each variant inferred, one folder per
file under the output root, one summary table, the exit status the worst of the files'."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_release_checkpoint

import cvt_port
from cvt_port.cli import main
from cvt_port.errors import ExitStatus
from cvt_port.folder import FileResult, worst_status
from evalkit import cvt_port_cli


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory):
    """Two good release files (CvT-13 at 224, CvT-13 at 384 from 22k), one with a damaged weight (parity
    fails) and one truncated (bad input): every outcome but an internal error, in one folder."""
    folder = tmp_path_factory.mktemp("releases")
    ref224 = save_release_checkpoint("cvt-13-224", folder / "CvT-13-224x224-IN-1k.pth", seed=0)
    save_release_checkpoint("cvt-13-384-22k", folder / "CvT-13-384x384-IN-22k.pth", seed=1)
    damaged = save_release_checkpoint("cvt-13-384", folder / "CvT-13-384x384-IN-1k.pth", seed=2).state_dict()
    damaged["stage2.blocks.9.mlp.fc2.weight"][0, 0] = float("nan")
    torch.save(damaged, folder / "CvT-13-384x384-IN-1k.pth")
    save_release_checkpoint("cvt-13-224", folder / "CvT-21-224x224-IN-1k.pth", seed=3)  # CvT-13 weights, CvT-21 name
    (folder / "notes.txt").write_text("not a checkpoint, not a .pth: ignored")
    return folder, ref224


@pytest.fixture(scope="module")
def folder_run(release_folder, tmp_path_factory):
    folder, _ = release_folder
    root = tmp_path_factory.mktemp("converted") / "hf"
    r = cvt_port_cli("convert", folder, root)
    return r, root


def test_folder_converts_each_file_into_its_own_folder(folder_run, release_folder):
    r, root = folder_run
    folder, ref224 = release_folder
    assert sorted(p.name for p in root.iterdir()) == ["CvT-13-224x224-IN-1k", "CvT-13-384x384-IN-22k"]
    variants = {p.name: json.loads((p / "conversion.json").read_text())["variant"] for p in root.iterdir()}
    assert variants == {"CvT-13-224x224-IN-1k": "cvt-13-224", "CvT-13-384x384-IN-22k": "cvt-13-384-22k"}
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        diff = (cvt_port.load_model(root / "CvT-13-224x224-IN-1k")(x).logits - ref224(x)).abs().max().item()
    assert diff <= 1e-5
    from huggingface_hub import ModelCard

    card = ModelCard.load(root / "CvT-13-384x384-IN-22k" / "README.md").data
    assert card.datasets == ["imagenet-21k", "imagenet-1k"] and card.base_model == "microsoft/cvt-13-384-22k"


def test_failed_files_leave_nothing_and_the_status_is_the_worst(folder_run):
    r, root = folder_run
    assert r.returncode == 2, r.stderr  # bad input (2) outranks a failed parity check (1) and passes (0)
    assert "Traceback" not in r.stderr
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_one_summary_table(folder_run):
    r, root = folder_run
    print("\n" + r.stdout)
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| file | variant | output | status |")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:] if line.startswith("| ")}
    assert sorted(rows) == ["CvT-13-224x224-IN-1k.pth", "CvT-13-384x384-IN-1k.pth", "CvT-13-384x384-IN-22k.pth",
                            "CvT-21-224x224-IN-1k.pth"]
    first = rows["CvT-13-224x224-IN-1k.pth"]
    assert "| cvt-13-224 |" in first and "| 0 converted |" in first
    assert "| 0 converted |" in rows["CvT-13-384x384-IN-22k.pth"]
    assert "| 1 parity failed |" in rows["CvT-13-384x384-IN-1k.pth"] and "differs from the original" in rows[
        "CvT-13-384x384-IN-1k.pth"]
    assert "| 2 bad input |" in rows["CvT-21-224x224-IN-1k.pth"] and "disagrees with the weights" in rows[
        "CvT-21-224x224-IN-1k.pth"]
    facts = json.loads((root / "CvT-13-224x224-IN-1k" / "conversion.json").read_text())
    assert f"| {facts['parity']['stock_gelu_max_abs_logit_diff']:.3g} |" in rows["CvT-13-224x224-IN-1k.pth"]
    assert lines[-1] == "2 of 4 files converted; exit status 2 (the worst)"


def two_files(folder: Path, tmp_path: Path, *names: str) -> Path:
    """A folder holding only these release files of ``folder`` (as links)."""
    sub = tmp_path / "two"
    sub.mkdir()
    for name in names:
        (sub / name).symlink_to(folder / name)
    return sub


def test_python_api_and_a_parity_failure_is_exit_1(release_folder, tmp_path):
    """convert_many under the CLI: without the bad-input file, the worst is the failed parity check."""
    folder, _ = release_folder
    sub = two_files(folder, tmp_path, "CvT-13-224x224-IN-1k.pth", "CvT-13-384x384-IN-1k.pth")
    results = cvt_port.convert_many(sub, tmp_path / "out", log=lambda m: None)
    assert [(r.source.name, int(r.status), r.variant) for r in results] == [
        ("CvT-13-224x224-IN-1k.pth", 0, "cvt-13-224"), ("CvT-13-384x384-IN-1k.pth", 1, None)]
    assert results[0].max_abs_logit_diff <= 1e-5 and results[0].output == tmp_path / "out" / "CvT-13-224x224-IN-1k"
    assert worst_status(results) == ExitStatus.FAIL
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CvT-13-224x224-IN-1k"]


@pytest.mark.parametrize("statuses, worst", [([], 0), ([0, 0], 0), ([0, 1, 0], 1), ([1, 2, 0], 2), ([2, 4, 1], 4)])
def test_worst_status_follows_the_contract(statuses, worst):
    results = [FileResult(Path(f"{i}.pth"), Path(str(i)), ExitStatus(s)) for i, s in enumerate(statuses)]
    assert worst_status(results) == worst


def test_taken_output_folder_is_refused_before_any_file_is_read(release_folder, tmp_path, capsys):
    folder, _ = release_folder
    taken = tmp_path / "out" / "CvT-21-224x224-IN-1k"  # the last file's folder
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("mine")
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(taken) in err[0] and "--overwrite" in err[0]  # no file was read: no progress lines
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CvT-21-224x224-IN-1k"]


@pytest.mark.parametrize("argv, says", [
    (["--push-to-hub", "me/cvt"], "--push-to-hub me/cvt: uploads one converted folder"),
    ([], "holds no .pth files"),
])
def test_folder_usage_errors(tmp_path, capsys, argv, says):
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "out"), *argv]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_bug_on_one_file_is_exit_4_and_the_others_still_convert(release_folder, tmp_path, monkeypatch, capsys):
    from cvt_port import conversion

    folder, _ = release_folder
    sub = two_files(folder, tmp_path, "CvT-13-224x224-IN-1k.pth", "CvT-13-384x384-IN-22k.pth")
    real, calls = conversion.measure_parity, []

    def bug_once(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("a bug in the parity check")
        return real(*a, **kw)

    monkeypatch.setattr(conversion, "measure_parity", bug_once)
    assert main(["convert", str(sub), str(tmp_path / "out")]) == 4
    out, err = capsys.readouterr()
    assert "| 4 internal error |" in out and "ZeroDivisionError: a bug in the parity check" in out
    assert "| cvt-13-384-22k |" in out and out.strip().endswith("1 of 2 files converted; exit status 4 (the worst)")
    assert "internal error: ZeroDivisionError" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CvT-13-384x384-IN-22k"]


def test_sigterm_during_the_second_file_keeps_the_first_and_leaves_no_half_written_folder(release_folder, tmp_path):
    import signal

    folder, _ = release_folder
    sub = two_files(folder, tmp_path, "CvT-13-224x224-IN-1k.pth", "CvT-13-384x384-IN-22k.pth")
    root = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "cvt_port", "convert", str(sub), str(root)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, second = [], False
    try:
        for line in p.stderr:
            second = second or line.startswith("== 2/2")
            if second and line.startswith("[3/5]"):  # the second file's temporary folder is being written
                seen = sorted(q.name for q in root.iterdir())
                p.send_signal(signal.SIGTERM)
                break
        rest = p.stderr.read().strip().splitlines()
        code = p.wait(timeout=120)
    finally:
        p.kill()
    assert seen[1] == "CvT-13-224x224-IN-1k" and seen[0].startswith(".CvT-13-384x384-IN-22k.tmp-")
    assert code == 143 and rest == ["terminated (SIGTERM): stopped, no half-written folder left"]
    assert sorted(q.name for q in root.iterdir()) == ["CvT-13-224x224-IN-1k"]
    assert (root / "CvT-13-224x224-IN-1k" / "model.safetensors").exists()
