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

A signal is seen the moment it arrives, not only when its Python handler runs: Python runs handlers in the main
thread between bytecodes, and a main thread blocked in C (a gloo collective waiting for a peer, the process group's
rendezvous) runs none. :func:`sigterm_raises` therefore points Python's wakeup file descriptor
(:func:`signal.set_wakeup_fd`, written by the C-level handler) at a socket that a daemon thread reads: it notes the
arrival for :func:`signalled_near` (the watch of :mod:`evaluate.runtime.peers` asks it before it calls a vanished
peer a death: SLURM signals every task of a step at once, so a peer gone while a SIGTERM is pending, or arriving
within :data:`PEER_GRACE_S`, is the interruption, 143, on every task), and when no handler has run
:data:`STUCK_S` seconds after an arrival, the main thread is stuck in C and the thread ends the process itself with
the interruption's line and status: every wait is interruptible.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
import time

from cvt_port.errors import ExitStatus

_in_pass = False  # the Lightning pass is running: Lightning's signal connector stops it
_owner: int | None = None  # the process that installed the handler (DataLoader workers inherit it by fork)
_received: tuple[signal.Signals, float] | None = None  # the last SIGTERM/SIGINT this process got, and when (monotonic)
# the signals of one scancel or Ctrl-C reach a process and its DataLoader workers within milliseconds; a worker's
# death is read as the interruption when this process got (or gets) a signal this close to it
GRACE_S = 2.0
# a peer of the launch that vanished this close to a signal of this process went with the same scancel (signals of a
# step reach its tasks within microseconds; a peer needs far longer than that to act on its own and exit)
PEER_GRACE_S = 0.5
# how often the signal watch looks whether its run is over (the run's end also wakes it at once)
WATCH_POLL_S = 0.5
# a signal that arrived but whose Python handler has not run this long after: the main thread is blocked in C
STUCK_S = 3.0
_handled: float | None = None  # when a Python handler of ours last ran (monotonic)


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


def _note(signum: int, handled: bool = True) -> None:
    """A SIGTERM/SIGINT reached this process: from its Python handler (``handled``) or from the wakeup socket."""
    global _received, _handled
    now = time.monotonic()
    _received = (signal.Signals(signum), now)
    if handled:
        _handled = now


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
    return signalled_near(GRACE_S if grace_s is None else grace_s)


def signalled_near(grace_s: float) -> Interrupted | None:
    """The SIGTERM/SIGINT this process received within ``grace_s`` seconds before now, or receives within ``grace_s``
    after (it waits that long), as :class:`Interrupted`; else None. Any thread may ask: a signal is seen on arrival
    (the wakeup socket), also while the main thread is blocked in C."""
    now = time.monotonic()
    while True:
        _drain()
        if _received is not None and _received[1] >= now - grace_s:
            return Interrupted(_received[0])
        if time.monotonic() >= now + grace_s:
            return None
        time.sleep(0.02)  # in the main thread, a signal's Python handler runs between these sleeps


_wakeup: socket.socket | None = None  # the reading end of the wakeup socket (None: none installed)
_wakeup_lock = threading.Lock()


def _drain() -> list[int]:
    """The signals the C-level handler wrote to the wakeup socket since the last read, noted on arrival."""
    got: list[int] = []
    with _wakeup_lock:
        sock = _wakeup
        if sock is None:
            return got
        try:
            while True:
                data = sock.recv(64)
                if not data:
                    break
                got += list(data)
        except (BlockingIOError, OSError):
            pass
    for signum in got:
        if signum in (signal.SIGTERM, signal.SIGINT):
            _note(signum, handled=False)
    return got


def _watch_signals(sock: socket.socket, done: threading.Event) -> None:
    """The wakeup socket's reader: notes each signal on arrival; ends the process with the interruption's line and
    status when the main thread has run no handler :data:`STUCK_S` seconds after one arrived (it is blocked in C)."""
    import select

    while not done.is_set():
        try:
            ready, _, _ = select.select([sock], [], [], WATCH_POLL_S)
        except (OSError, ValueError):
            return
        if not ready or not [s for s in _drain() if s in (signal.SIGTERM, signal.SIGINT)]:
            continue
        arrived = time.monotonic()
        if done.wait(STUCK_S) or os.getpid() != _owner:
            return
        if _handled is None or _handled < arrived - 1.0:  # no handler ran around the arrival or since
            stopped = Interrupted(_received[0])
            print(f"interrupted: {stopped}", file=sys.stderr, flush=True)
            os._exit(int(stopped.exit_status))


def _forget_wakeup_in_child() -> None:
    """A forked child (a DataLoader worker) must not write its signals into its parent's wakeup socket."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)


_at_fork_registered = False


@contextlib.contextmanager
def _signals_seen_on_arrival():
    global _wakeup, _at_fork_registered
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        reader.close(), writer.close()
        yield
        return
    if not _at_fork_registered:
        os.register_at_fork(after_in_child=_forget_wakeup_in_child)
        _at_fork_registered = True
    _wakeup = reader
    done = threading.Event()
    thread = threading.Thread(target=_watch_signals, args=(reader, done), name="cvt-port-signals", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous)
        # wake the thread out of its select now (an end of file to read), or every run, a refusal included, would
        # wait out the select's 0.5 s before it exits
        with contextlib.suppress(OSError):
            writer.shutdown(socket.SHUT_WR)
        thread.join(timeout=1.0)
        with _wakeup_lock:
            _wakeup = None
        reader.close(), writer.close()


@contextlib.contextmanager
def sigterm_raises():
    """For a program's main: SIGTERM raises :class:`Interrupted` (outside the Lightning pass), so the
    program exits 143 after its cleanup instead of dying mid-write; SIGTERM and SIGINT are seen on arrival (see
    the module docstring). The previous handlers and wakeup descriptor are restored."""
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
        with _signals_seen_on_arrival():
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if callable(previous_int):
            signal.signal(signal.SIGINT, previous_int)
