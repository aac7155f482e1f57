"""A DataLoader worker forked while another thread creates its Python thread state starts (evaluate.runtime.fork_guard).

CPython 3.10 and 3.11 take their thread-list lock in a forked child before resetting it: a fork made while a
native thread (gloo's, giving back a tensor's Python object) held it left a worker hung inside ``os.fork`` and the
launch waiting for it forever (seen once in the suite, on Python 3.11.7). The race is a microsecond wide; here a
native thread holds the lock for a known time instead, so the fork meets it every time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from evaluate.runtime import fork_guard

# A native thread (not a Python one: it must not need the GIL while it holds the lock) that takes the interpreter's
# thread-list lock, the one a thread state's creation takes, holds it for the given microseconds and lets go.
HOLDER_C = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include "internal/pycore_runtime.h"
#include <pthread.h>
#include <unistd.h>

static volatile int held = 0;

#if PY_VERSION_HEX >= 0x030D0000
#define TAKE() PyMutex_Lock(&_PyRuntime.interpreters.mutex)
#define GIVE() PyMutex_Unlock(&_PyRuntime.interpreters.mutex)
#else
#define TAKE() PyThread_acquire_lock(_PyRuntime.interpreters.mutex, WAIT_LOCK)
#define GIVE() PyThread_release_lock(_PyRuntime.interpreters.mutex)
#endif

static void *holder(void *usec) {
    TAKE();
    held = 1;
    usleep((useconds_t)(long)usec);
    GIVE();
    return NULL;
}

int hold_thread_list_lock(long usec) {
    pthread_t t;
    held = 0;
    if (pthread_create(&t, NULL, holder, (void *)usec) != 0) return -1;
    pthread_detach(t);
    while (!held) usleep(100);
    return 0;
}
"""


@pytest.fixture(scope="module")
def holder(tmp_path_factory) -> ctypes.CDLL:
    """The holder, compiled against this interpreter's own headers (the C compiler torch's inductor needs too)."""
    folder = tmp_path_factory.mktemp("holder")
    (folder / "holder.c").write_text(HOLDER_C)
    lib = folder / "holder.so"
    cc = os.environ.get("CC", "cc")
    made = subprocess.run([cc, "-shared", "-fPIC", "-O1", f"-I{sysconfig.get_paths()['include']}",
                           str(folder / "holder.c"), "-o", str(lib), "-lpthread"], capture_output=True, text=True)
    assert made.returncode == 0, f"{cc} could not build the test's lock holder (install gcc): {made.stderr[-1500:]}"
    return ctypes.CDLL(str(lib))  # its calls release the GIL: the holder never waits for this thread


def _fork_and_wait(deadline_s: float = 20.0) -> int | None:
    """Fork; the child exits 7 at once. Its exit status, or None when it did not end (it hung inside the fork)."""
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_a_fork_made_while_a_native_thread_holds_the_thread_list_lock_starts_its_child(holder):
    """With the guard installed (as every pass installs it), the fork waits for the lock's holder, and the child
    starts and exits. Without it, on Python 3.11.7, the child hangs in ``os.fork`` (the test fails with None)."""
    fork_guard.install()
    for _ in range(3):
        assert holder.hold_thread_list_lock(200_000) == 0
        assert _fork_and_wait() == 7


def test_the_guard_is_installed_where_the_interpreter_needs_it():
    """CPython 3.10 and 3.11 reset the lock too late (gh-112275; its 3.11 backport came in a source-only security
    release, so every 3.11 gets the hook); 3.12 resets it first."""
    assert fork_guard.needed((3, 11, 7), "cpython") and fork_guard.needed((3, 10, 14), "cpython")
    assert fork_guard.needed((3, 11, 14), "cpython") and not fork_guard.needed((3, 12, 0), "cpython")
    assert not fork_guard.needed((3, 11, 7), "pypy")
    assert fork_guard.needed() == (sys.implementation.name == "cpython" and sys.version_info[:2] < (3, 12))


def test_every_run_installs_the_guard_before_it_does_anything(monkeypatch, tmp_path):
    """``run_plan`` (under the CLI and the API, every set of a suite) installs the guard first: a cache build's
    workers and the pass's are forked after it. An install that raises shows it is called before any model or
    image is read (the model named here does not exist)."""
    from evaluate.api import DataSpec, EvalPlan, ModelSpec
    from evaluate.run import run_plan

    class Installed(Exception):
        pass

    def install():
        raise Installed

    monkeypatch.setattr(fork_guard, "install", install)
    with pytest.raises(Installed):
        run_plan(EvalPlan(models=ModelSpec(model=str(tmp_path / "no-model")), data=DataSpec(source=str(tmp_path))))
