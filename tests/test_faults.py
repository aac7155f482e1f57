"""Faults decided together: on 2 CPU processes a bad image on either rank, a rank without images, or
nothing readable at all ends every rank the same way, with one line, and never hangs.

Each run is bounded by a timeout (a hang fails the test). Data: a few of the bundled digits
(fast at 32x32) with the bundled model converted by cvt_port; samples are sorted by image id and
rank 0 reads the first half of the samples, rank 1 the rest (the first rank holds the odd one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cvt_port.errors import BadInput
from evaluate.default import BUNDLED, CHECKPOINT
from imagegen import write_corrupt

DIGITS = BUNDLED / "digits" / "val"


@pytest.fixture(scope="module")
def digits_model(digits):
    return digits  # conftest's session folder


def make_digits(root, per_class=2, classes=range(3)):
    for c in classes:
        for src in sorted((DIGITS / str(c)).iterdir())[:per_class]:
            (root / str(c)).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / str(c) / src.name)
    return root


def run2(model, data, out, *more, timeout=300, program=("-m", "evaluate")):
    """python -m evaluate (or ``program``: a script that runs its main) on 2 CPU processes (DDP), killed (and the
    test failed) if it hangs."""
    cmd = [sys.executable, *map(str, program), "--model", str(model), "--config", "cvt-tiny-digits", "--data", str(data),
           "--output", str(out), "--reference", str(CHECKPOINT), "--accelerator", "cpu", "--devices", "2",
           "--strategy", "ddp", "--batch-size", "2", "--num-workers", "0", *map(str, more)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def error_lines(r):
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("rank", [0, 1])
def test_a_bad_image_on_either_rank_ends_both_with_one_line(digits_model, tmp_path, rank):
    data = make_digits(tmp_path / "val")  # 6 good images: 0/a 0/b 1/a 1/b 2/a 2/b
    # sorted ids, 7 samples: rank 0 reads samples 0-3, rank 1 samples 4-6; the bad image is the first or the last
    bad = data / "0" / "00_bad.png" if rank == 0 else data / "2" / "zz_bad.png"
    write_corrupt(bad)
    r = run2(digits_model, data, tmp_path / "out")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = error_lines(r)
    assert lines and len(set(lines)) == 1, r.stderr[-3000:]  # every rank says the same one line
    assert bad.name in lines[0] and "--skip-bad-images" in lines[0]
    assert "Traceback" not in r.stderr and "gloo" not in r.stderr.lower()
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_rank_without_images_takes_part(digits_model, tmp_path):
    data = make_digits(tmp_path / "val", per_class=1, classes=[7])  # 1 image, 2 processes
    r = run2(digits_model, data, tmp_path / "out")
    assert r.returncode == 3, r.stderr[-3000:]  # evaluated; 1 image can make no check
    assert "GATE: NOT MADE" in r.stdout and "Traceback" not in r.stderr
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["num_samples"] == 1 and rep["world_size"] == 2 and rep["top1"] == 100.0


def test_nothing_readable_with_skip_bad_images_is_bad_input(digits_model, tmp_path):
    for k in range(3):
        write_corrupt(tmp_path / "val" / str(k) / f"bad{k}.png", seed=k)
    r = run2(digits_model, tmp_path / "val", tmp_path / "out", "--skip-bad-images")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = error_lines(r)
    assert lines and len(set(lines)) == 1 and "none of the 3 images could be read" in lines[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "nan" not in r.stderr.lower()


def test_the_collective_decision_picks_one_fault_for_every_rank():
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from evaluate.runtime.interrupts import Interrupted
    from evaluate.validation.faults import Fault, FaultOnAnotherRank, decide_faults, fault_exception

    bad0, bad1 = Fault("bad input", "a.png: cannot decode", 0), Fault("bad input", "b.png: cannot decode", 1)
    err1 = Fault("error", "RuntimeError: boom", 1)
    term = Fault("terminated", "terminated (SIGTERM)", 1)
    assert decide_faults([]) is None
    assert decide_faults([bad1, bad0]) == bad0  # the lowest rank
    assert decide_faults([bad0, err1]) == err1  # an error beats bad input
    assert decide_faults([bad0, err1, term]) == term  # a signal beats both
    e = fault_exception(bad0)
    assert isinstance(e, BadInput) and str(e) == "a.png: cannot decode"
    e = fault_exception(err1)
    assert isinstance(e, FaultOnAnotherRank) and "rank 1: RuntimeError: boom" in str(e)
    assert isinstance(fault_exception(term), Interrupted) and fault_exception(term).exit_status == 143
    assert fault_exception(Fault("interrupted", "SIGINT", 0)).exit_status == 130
    # what ends a pass on a signal (Lightning's SIGTERMException, Ctrl-C) is a fault of that kind
    assert Fault.from_exception(SIGTERMException()).kind == "terminated"
    assert Fault.from_exception(KeyboardInterrupt()).kind == "interrupted"
    assert Fault.from_exception(Interrupted(signal.SIGTERM)).kind == "terminated"
    assert Fault.from_exception(ValueError("x\ny")) == Fault("error", "ValueError: x", 0)


LATE_RANK_0 = """
import os, sys, time
from evaluate.cli import main
code = main(sys.argv[1:])
if os.environ.get("LOCAL_RANK", "0") == "0":
    time.sleep(7)  # past Lightning's observer's 5 s period: rank 1 has exited with the verdict meanwhile
sys.exit(code)
"""


def test_a_rank_that_exits_with_the_verdict_first_leaves_rank_0_its_status(digits_model, tmp_path):
    """--devices 2 from one command: rank 1 ends with the verdict (3, not made: 6 images) while rank 0 is still
    on its way out. Lightning's observer of the process it started SIGKILLed rank 0 then (exit -9, not 3)."""
    script = tmp_path / "late_rank_0.py"
    script.write_text(LATE_RANK_0)
    r = run2(digits_model, make_digits(tmp_path / "val"), tmp_path / "out", program=(script,))
    assert r.returncode == 3 and "GATE: NOT MADE" in r.stdout, r.stderr[-3000:]
    assert "Forcefully terminating" not in r.stderr
