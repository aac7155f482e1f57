"""The in-process command-line runner (evalkit.run_main) shows a test what a new process would show: the
warnings a fresh interpreter prints and log lines of handlers made before the run reach its stderr, its
environment and working folder are the ones given and are restored after, and SystemExit is the exit status."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from evalkit import run_main

LOG = logging.getLogger("evalkit-test-library")


def test_what_a_new_process_shows_is_captured_and_the_process_state_restored(tmp_path):
    handler = logging.StreamHandler(sys.stderr)  # as a library makes it at import, before the run
    LOG.addHandler(handler)
    here = os.getcwd()

    def main(argv):
        print("out", argv)
        warnings.warn("a library's warning", UserWarning)
        warnings.warn("deprecated", DeprecationWarning)  # hidden in a new interpreter too
        LOG.warning("a library's log line")
        os.environ["SET_BY_MAIN"] = "1"
        return int(os.environ["CODE"]) if os.getcwd() == str(tmp_path) else 99

    try:
        r = run_main(main, ["a", 1], cwd=tmp_path, env={"CODE": "3"})
    finally:
        LOG.removeHandler(handler)
    assert (r.returncode, r.stdout) == (3, "out ['a', '1']\n")
    assert "UserWarning: a library's warning" in r.stderr and "a library's log line" in r.stderr
    assert "deprecated" not in r.stderr
    assert os.getcwd() == here and "SET_BY_MAIN" not in os.environ and "CODE" not in os.environ
    assert handler.stream is sys.stderr


def test_system_exit_is_the_exit_status():
    def usage(argv):
        raise SystemExit(2)

    assert run_main(usage, []).returncode == 2
    assert run_main(lambda argv: sys.exit(), []).returncode == 0


def test_several_devices_are_refused_in_process():
    """Lightning's DDP launcher would start pytest's command line again (a worker of pytest-xdist dies)."""
    import pytest

    from evalkit import evaluate_cli

    for argv in (["--devices", "2"], ["--strategy", "ddp"]):
        with pytest.raises(ValueError, match="evaluate_process"):
            evaluate_cli("--model", "m", *argv)
