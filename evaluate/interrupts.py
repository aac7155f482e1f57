"""Interrupts (SIGINT, SIGTERM) as an outcome of their own: never a verdict, never a report.

SLURM sends SIGTERM at a time limit, on preemption and on ``scancel``; Ctrl-C sends SIGINT. A run
that is stopped must read as stopped (exit 130 or 143), not as a failed or passed gate, and must not
write a report for the images it did not see. How Lightning 2.6 treats them inside ``validate``:

- SIGINT: Python raises ``KeyboardInterrupt``; Lightning catches it, calls the callbacks'
  ``on_exception``, tears down and calls ``sys.exit(1)``. :func:`evaluate.trainer.run_validation`
  records the exception with a callback and turns that exit back into :class:`Interrupted`.
- SIGTERM: Lightning's ``_SignalConnector`` installs its own handler for the pass (it sets
  ``trainer.received_sigterm`` and still calls a handler that was there before); the evaluation loop
  raises ``SIGTERMException`` (a ``SystemExit`` without a code, which would exit 0) at the next batch,
  and lets the pass finish when the signal came during the last batch. Both are turned into
  :class:`Interrupted` by :func:`evaluate.trainer.run_validation`, which also checks the flag after
  the pass.

Outside the pass (loading, converting, writing) the CLI's handler (:func:`sigterm_raises`) raises
:class:`Interrupted` at once, so ``finally`` blocks and temporary folders are cleaned up; inside the
pass it only records the signal and leaves the stop to Lightning (the batch finishes, the strategy
tears down in order).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from cvt_port.errors import ExitStatus

_in_pass = False  # the Lightning pass is running: Lightning's signal connector stops it
_owner: int | None = None  # the process that installed the handler (DataLoader workers inherit it by fork)


class Interrupted(BaseException):
    """The run was stopped by a signal. A ``BaseException`` (like ``KeyboardInterrupt``) so that no
    ``except Exception`` on the way turns it into an error."""

    def __init__(self, signum: int):
        self.signum = signal.Signals(signum)
        super().__init__(f"{self.signum.name}: stopped before the gate's verdict; no report written")

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.INTERRUPTED if self.signum == signal.SIGINT else ExitStatus.TERMINATED


@contextlib.contextmanager
def lightning_pass():
    """Mark the Lightning pass: a SIGTERM then only sets Lightning's flag (see the module docstring)."""
    global _in_pass
    previous, _in_pass = _in_pass, True
    try:
        yield
    finally:
        _in_pass = previous


def _on_sigterm(signum, frame) -> None:
    if os.getpid() != _owner:  # a forked DataLoader worker: end quietly, the main process reports
        raise SystemExit(128 + signum)
    if not _in_pass:
        raise Interrupted(signum)


@contextlib.contextmanager
def sigterm_raises():
    """For a program's main: SIGTERM raises :class:`Interrupted` (outside the Lightning pass), so the
    program exits 143 after its cleanup instead of dying mid-write. The previous handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _owner
    _owner = os.getpid()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
