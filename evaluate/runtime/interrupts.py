"""Interrupts (SIGINT, SIGTERM) as an outcome of their own: never a verdict, never a report.

SLURM sends SIGTERM at a time limit, on preemption and on ``scancel``; Ctrl-C sends SIGINT. A run
that is stopped must read as stopped (exit 130 or 143), not as a failed or passed gate, and must not
write a report for the images it did not see. How Lightning 2.6 treats them inside ``validate``:

- SIGINT: Python raises ``KeyboardInterrupt``; Lightning catches it, calls the callbacks'
  ``on_exception``, tears down and calls ``sys.exit(1)``. :func:`evaluate.validation.trainer.run_validation`
  records the exception with a callback and turns that exit back into :class:`Interrupted`.
- SIGTERM: Lightning's ``_SignalConnector`` installs its own handler for the pass (it sets
  ``trainer.received_sigterm`` and still calls a handler that was there before); the evaluation loop
  raises ``SIGTERMException`` (a ``SystemExit`` without a code, which would exit 0) at the next batch,
  and lets the pass finish when the signal came during the last batch. Both are turned into
  :class:`Interrupted` by :func:`evaluate.validation.trainer.run_validation`, which also checks the flag after
  the pass.

Outside the pass (loading, converting, writing) the CLI's handler (:func:`sigterm_raises`) raises
:class:`Interrupted` at once, so ``finally`` blocks and temporary folders are cleaned up; inside the
pass it only records the signal and leaves the stop to Lightning (the batch finishes, the strategy
tears down in order).

DataLoader workers get the same signal (``scancel`` signals every process of the step, Ctrl-C the whole
foreground group) and may die of it before the main process's handler has run: the main process then
sees ``RuntimeError: DataLoader worker ... exited unexpectedly``. :func:`interruption` reads such a death
as the interruption it is: when the worker itself was ended by SIGTERM/SIGINT, or when this process
received one within :data:`GRACE_S` seconds before or after (it waits that long for it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time

from cvt_port.errors import ExitStatus

_in_pass = False  # the Lightning pass is running: Lightning's signal connector stops it
_owner: int | None = None  # the process that installed the handler (DataLoader workers inherit it by fork)
_received: tuple[signal.Signals, float] | None = None  # the last SIGTERM/SIGINT this process got, and when (monotonic)
# the signals of one scancel or Ctrl-C reach a process and its DataLoader workers within milliseconds; a worker's
# death is read as the interruption when this process got (or gets) a signal this close to it
GRACE_S = 2.0


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


def _note(signum: int) -> None:
    global _received
    _received = (signal.Signals(signum), time.monotonic())


def _on_sigterm(signum, frame) -> None:
    if os.getpid() != _owner:  # a forked DataLoader worker: end quietly, the main process reports
        raise SystemExit(128 + signum)
    _note(signum)
    if not _in_pass:
        raise Interrupted(signum)


def _sigint_noter(previous):
    """SIGINT: noted (for :func:`interruption`), then handled as before (Python's KeyboardInterrupt)."""
    def on_sigint(signum, frame) -> None:
        if os.getpid() == _owner:
            _note(signum)
        if callable(previous):
            previous(signum, frame)
    return on_sigint


# what torch says when a worker died: "... exited unexpectedly with exit code 143", "... is killed by signal: Terminated."
_WORKER_DIED = re.compile(r"DataLoader worker \(pid.*?\) (exited unexpectedly|is killed by signal)")
_WORKER_CAUSE = {"exit code 143": signal.SIGTERM, "exit code 130": signal.SIGINT,
                 "signal: Terminated": signal.SIGTERM, "signal: Interrupt": signal.SIGINT}


def interruption(exc: BaseException, grace_s: float | None = None) -> Interrupted | None:
    """The interruption ``exc`` is a consequence of, or None. A DataLoader worker that died is one when it died of
    SIGTERM/SIGINT itself, or when this process received either within ``grace_s`` seconds (default
    :data:`GRACE_S`) of the failure: it waits that long, letting the signal's handler run."""
    if isinstance(exc, Interrupted):
        return exc
    text = str(exc)
    if not isinstance(exc, RuntimeError) or not _WORKER_DIED.search(text):
        return None
    for cause, signum in _WORKER_CAUSE.items():
        if cause in text:
            return Interrupted(signum)
    grace = GRACE_S if grace_s is None else grace_s
    now = time.monotonic()
    while True:
        if _received is not None and _received[1] >= now - grace:
            return Interrupted(_received[0])
        if time.monotonic() >= now + grace:
            return None
        time.sleep(0.02)  # the main thread: a signal's Python handler runs between these sleeps


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
    previous_int = signal.getsignal(signal.SIGINT)
    if callable(previous_int):  # not where SIGINT is ignored (a background job)
        signal.signal(signal.SIGINT, _sigint_noter(previous_int))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if callable(previous_int):
            signal.signal(signal.SIGINT, previous_int)
