"""Bad input to python -m evaluate: one clear line naming the culprit, exit status 2; and the rest of the
exit-status contract (3 not made, 4 internal error, 130/143 interrupted: no report)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvt_port.errors import EXIT_STATUS_HELP
from evaluate.cli import main
from evalkit import evaluate_cli, wnids
from imagegen import make_flat, make_imagefolder, write_corrupt, write_truncated_jpeg


@pytest.fixture(scope="module")
def good_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("good") / "val"
    make_imagefolder(root, wnids(3), per_class=2)
    return root


def run(capsys, tiny, data, *more, tmp):
    code = main(["--model", str(tiny["hf"]), "--config", str(tiny["yaml"]), "--data", str(data),
                 "--output", str(tmp / "out"), "--accelerator", "cpu", "--num-workers", "0", *map(str, more)])
    err = [l for l in capsys.readouterr().err.strip().splitlines() if l.startswith("error:")]
    return code, (err[-1] if err else "")


def test_data_path_missing(tiny, tmp_path, capsys):
    code, err = run(capsys, tiny, tmp_path / "nowhere", tmp=tmp_path)
    assert code == 2 and "nowhere" in err


def test_data_folder_empty(tiny, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, tiny, tmp_path / "empty", tmp=tmp_path)
    assert code == 2 and "empty" in err


def test_unknown_layout(tiny, tmp_path, capsys):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "a.txt").write_text("x")
    code, err = run(capsys, tiny, d, tmp=tmp_path)
    assert code == 2 and str(d) in err


def test_folder_name_that_is_no_wnid_nor_label(tiny, tmp_path, capsys):
    make_imagefolder(tmp_path / "val", [wnids(1)[0], "n99999999x"], per_class=1)
    code, err = run(capsys, tiny, tmp_path / "val", tmp=tmp_path)
    assert code == 2 and "n99999999x" in err


def test_labels_file_that_does_not_cover_the_images(tiny, tmp_path, capsys):
    make_flat(tmp_path / "flat", [1, 2, 3])
    (tmp_path / "labels.txt").write_text("n01440764\n")
    code, err = run(capsys, tiny, tmp_path / "flat", "--labels-file", tmp_path / "labels.txt", tmp=tmp_path)
    assert code == 2 and "ILSVRC2012_val_00000002" in err and "labels.txt" in err


@pytest.mark.parametrize("writer", [write_corrupt, write_truncated_jpeg])
def test_bad_image_fails_by_default_and_is_named(tiny, good_data, tmp_path, capsys, writer):
    data = tmp_path / "val"
    shutil.copytree(good_data, data)
    bad = writer(data / wnids(1)[0] / "broken.JPEG")
    code, err = run(capsys, tiny, data, tmp=tmp_path)
    assert code == 2 and "broken.JPEG" in err and "--skip-bad-images" in err
    assert not (tmp_path / "out" / "report.json").exists()
    code, _ = run(capsys, tiny, data, "--skip-bad-images", "--reference", tiny["pth"], tmp=tmp_path)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert code == 3 and rep["num_bad_images"] == 1 and rep["num_samples"] == 6  # 6 images: not made
    assert bad.name in rep["bad_images"][0]


def test_model_folder_without_weights(tiny, good_data, tmp_path, capsys):
    empty = tmp_path / "noweights"
    empty.mkdir()
    shutil.copy(tiny["hf"] / "config.json", empty)
    code = main(["--model", str(empty), "--config", str(tiny["yaml"]), "--data", str(good_data)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "no weights" in err and str(empty) in err


def test_subset_larger_than_the_data(tiny, good_data, tmp_path, capsys):
    code, err = run(capsys, tiny, good_data, "--subset", "7", tmp=tmp_path)
    assert code == 2 and "--subset 7" in err and "6" in err


def test_hub_model_id_offline_is_one_line(good_data, tmp_path):
    r = evaluate_cli("--model", "microsoft/cvt-13", "--config", "cvt-13-224", "--data", good_data,
                     "--output", tmp_path, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: --model microsoft/cvt-13: cannot read it from the Hub")


def test_reference_file_missing(tiny, good_data, tmp_path, capsys):
    code, err = run(capsys, tiny, good_data, "--reference", tmp_path / "x.pth", tmp=tmp_path)
    assert code == 2 and "x.pth" in err


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as e:
        main(["--batch-size", "many"])
    assert e.value.code == 2


@pytest.mark.parametrize("flags", [["--precision", "fp7"], ["--accelerator", "tpu"], ["--strategy", "nonsense"]])
def test_impossible_device_settings_are_bad_input(tiny, good_data, tmp_path, capsys, flags):
    code = main(["--model", str(tiny["hf"]), "--config", str(tiny["yaml"]), "--data", str(good_data),
                 "--output", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: --accelerator/--devices/--num-nodes/--strategy/--precision:")


# -- the exit-status contract: verdicts, interrupts, internal errors ---------------------------------------------

SLOW_PASS = Path(__file__).resolve().parent / "slow_pass.py"


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """24 images: 24 steps of batch size 1, each slowed by tests/slow_pass.py."""
    root = tmp_path_factory.mktemp("many") / "val"
    make_imagefolder(root, wnids(6, step=37), per_class=4)
    return root


def signal_mid_pass(tiny, data, out, signum, *, workers: int, group: bool):
    """Start the real CLI with a slow pass, signal it once it is 2 steps into Lightning's pass."""
    cmd = [sys.executable, str(SLOW_PASS), "--model", str(tiny["hf"]), "--config", str(tiny["yaml"]), "--data",
           str(data), "--output", str(out), "--reference", str(tiny["pth"]), "--accelerator", "cpu",
           "--num-workers", str(workers), "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("step 2"):
                (os.killpg if group else os.kill)(proc.pid, signum)  # a group: as SLURM and `timeout` do
                break
        rest_out, rest_err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert any(l.startswith("step 2") for l in lines), "".join(lines)[-3000:]
    return proc.returncode, rest_out, "".join(lines) + rest_err


@pytest.mark.parametrize("signum, status, workers, group", [
    (signal.SIGTERM, 143, 0, False),  # Lightning: SIGTERMException at the next batch (SystemExit without a code)
    (signal.SIGTERM, 143, 1, True),  # the DataLoader worker dies of the same signal
    (signal.SIGINT, 130, 0, False),  # Lightning: KeyboardInterrupt -> sys.exit(1)
], ids=["SIGTERM", "SIGTERM-to-the-group-and-worker", "SIGINT"])
def test_a_signal_mid_pass_exits_128_plus_signal_and_leaves_the_previous_report(tiny, many, tmp_path, signum, status,
                                                                                 workers, group):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"gate": "previous"}\n')
    code, stdout, stderr = signal_mid_pass(tiny, many, out, signum, workers=workers, group=group)
    assert code == status, stderr[-3000:]
    assert (out / "report.json").read_text() == '{"gate": "previous"}\n' and sorted(os.listdir(out)) == ["report.json"]
    assert "GATE" not in stdout and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: {signal.Signals(signum).name}: stopped before the gate's verdict; no report written")


def test_an_unexpected_exception_is_exit_4_with_one_line_and_the_traceback_in_a_file(tiny, good_data, tmp_path,
                                                                                      capsys, monkeypatch):
    import evaluate.api

    def bug(plan):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(evaluate.api, "run_plan", bug)
    code = main(["--model", str(tiny["hf"]), "--data", str(good_data), "--output", str(tmp_path)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 4 and len(lines) == 1 and "GATE" not in captured.out
    match = re.fullmatch(r"internal error: ZeroDivisionError: a bug of ours \(full traceback in (.+); please report it\)",
                         lines[0])
    assert match, lines
    assert "Traceback" in Path(match.group(1)).read_text() and "a bug of ours" in Path(match.group(1)).read_text()
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("flags, flag", [(["--precision", "bf16-true"], "--precision bf16-true"),
                                         (["--precision", "16-true"], "--precision 16-true"),
                                         (["--strategy", "ddp_spawn"], "--strategy ddp_spawn")])
def test_settings_that_would_give_a_wrong_answer_are_refused_first(tmp_path, capsys, flags, flag):
    code = main(["--model", str(tmp_path / "absent"), "--data", str(tmp_path), "--accelerator", "cpu", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {flag}: ")


def test_help_states_the_exit_status_contract(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and " ".join(EXIT_STATUS_HELP.split()) in out


def test_sigterm_outside_the_pass_exits_143_after_cleanup(capsys):
    from evaluate.cli import outcome

    cleaned = []

    def work():  # e.g. loading a model: the signal must stop it, not wait for the pass
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            return 0
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    assert outcome(work) == 143 and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before
    assert capsys.readouterr().err.strip() == "interrupted: SIGTERM: stopped before the gate's verdict; no report written"


def test_every_plan_field_has_its_flag():
    import dataclasses

    from evaluate.cli import FLAGS, NOT_FLAGS
    from evaluate.plan import DataSpec, ModelSpec, ReportSpec, RunSpec

    from evaluate.plan_values import INPUTS

    parts = {"models": ModelSpec, "data": DataSpec, "run": RunSpec, "report": ReportSpec}
    fields = {f"{part}.{f.name}" for part, cls in parts.items() for f in dataclasses.fields(cls)}
    # the command is the command line itself (provenance); a models file is an input that becomes extra_models
    assert (fields | set(INPUTS)) - set(NOT_FLAGS) == set(FLAGS)
