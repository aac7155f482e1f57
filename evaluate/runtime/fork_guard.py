"""DataLoader workers forked safely while torch's C++ threads call into Python (CPython before 3.12).

Why: a DataLoader worker is a ``fork`` of its rank. CPython 3.10 and 3.11 (gh-112275; 3.12 is not affected) reset the
interpreter's thread-list lock (``HEAD_LOCK``) in the child only *after* taking it once: a child forked while
another thread held that lock waits for it forever, inside ``os.fork``, before running any Python. In a launch of
several processes such a thread exists: gloo's worker threads (``pt_gloo_runloop``) finish each collective by
dropping the last C++ reference to its tensors, and a tensor made in Python then gives back its Python object:
pybind11 creates a Python thread state for that thread (``PyThreadState_New``, the lock taken without the GIL).
Lightning runs such a collective (``has_len_all_ranks``) just before it makes the pass's workers, so, rarely (a
thread preempted while holding the lock; seen in our suite on Python 3.11.7), a worker never starts, its rank waits
for its batch forever, and every other rank waits for that one: a hang, with no line and no status.

:func:`install` (called by :func:`evaluate.run.run_plan`, so for every run) registers a hook that runs in the
forking thread just before each fork, with the GIL held: :func:`sys._current_frames` takes and gives back that lock,
so the fork waits until a thread inside it (one preempted there: the case that makes the hang likely on a loaded
machine) has let go. That thread then waits for the GIL, which the forking thread holds. What is left is a thread
that enters the lock in the microseconds between the hook and the fork: of 25,000 forks beside two gloo threads
churning collectives (tests/fork_trials.py), 12 children hung without the hook, none of 25,000 with it; with a
native thread holding the lock across the fork (tests/test_fork_guard.py), every child hangs without it. The cost is
one small dict per fork (a fork per DataLoader worker). The fix was backported to 3.11 late (September 2024, a
source-only security release), and which release holds it is not checked here: every CPython before 3.12 gets the
hook; 3.12 and later nothing.
"""

from __future__ import annotations

import os
import sys

_installed = False


def needed(version: tuple[int, ...] = tuple(sys.version_info[:3]),
           implementation: str = sys.implementation.name) -> bool:
    """Whether this interpreter may reset its thread-list lock too late in a forked child (CPython before 3.12)."""
    return implementation == "cpython" and version < (3, 12)


def _wait_for_the_thread_list() -> None:
    """Before a fork: the thread-list lock is taken and given back, so no thread holds it (the GIL is held: a
    thread that just let go of it waits for the GIL now)."""
    sys._current_frames()


def install() -> None:
    """Make every later fork of this process wait for the thread-list lock; once per process, where needed."""
    global _installed
    if _installed or not needed():
        return
    os.register_at_fork(before=_wait_for_the_thread_list)
    _installed = True
