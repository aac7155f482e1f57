"""The other processes of a launch, watched during the pass: one that dies is noticed in seconds and named.

Why: the ranks share nothing until the end of the pass (:mod:`evaluate.validation.lightning_module`), so a rank killed
(``kill -9``, the OOM killer, a node lost) would leave the others computing their whole share, then failing in
the first collective with a cut-off gloo traceback (exit 4), or, where the peer's connection is not closed (a
node gone), waiting for the process group's timeout (torch's default, 30 minutes). A daemon thread checks
every :data:`BEAT_S` seconds, through the process group's own store (the TCPStore on rank 0's node):

- a process on this node: its pid (published in the store) is gone or a zombie -> dead at once;
- a process on another node: its heartbeat counter in the store has not moved for :data:`STALE_S` seconds;
- the store itself fails: rank 0, which serves it, is gone.

A dead peer ends this process at once with one line (``process N of the launch died``) and exit 3, not made:
no verdict was reached, nothing is wrong with the input or the program, and a rerun can make it; no report
exists yet (the watch covers the pass only). A collective that fails outside the watch (writing the reports)
ends the same way through :func:`collective_failed`.

Unless this process was signalled too: ``scancel``, a time limit or a requeue signals every task of the step at
once, and a peer that acts on its SIGTERM first vanishes while this process's own is pending (its main thread may
be in C, where no Python handler runs). A peer gone while this process has a SIGTERM/SIGINT, or gets one within
:data:`evaluate.runtime.interrupts.PEER_GRACE_S`, is that interruption (143/130, its line), never a death
(:func:`evaluate.runtime.interrupts.signalled_near` sees a signal on arrival).

Processes of this node are looked at (their pids) before the store is touched, so a rank 0 that dies is noticed
within a beat as any other, not after the store's connection fails; torch's C++ warnings about that connection are
kept off the terminal by the CLI (``TORCH_CPP_LOG_LEVEL``).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from cvt_port.errors import ExitStatus, first_line

from .interrupts import PEER_GRACE_S, signalled_near

BEAT_S = 0.25  # how often the watch beats and looks
STALE_S = 60.0  # a process on another node whose heartbeat stopped this long is taken for dead
_PREFIX = "cvt-port/peers"


class PeerDied(Exception):
    """Another process of the launch died: the run stopped without a verdict (exit 3, not made)."""

    exit_status = ExitStatus.NOT_MADE

    def __init__(self, rank: int | None, detail: str = ""):
        self.rank = rank
        who = f"process {rank} of the launch" if rank is not None else "a process of the launch"
        super().__init__(f"{who} died{f' ({detail})' if detail else ''}; no verdict, no report: rerun the launch")


_watch: "_Watch | None" = None
_passes = 0


def start() -> None:
    """Watch the launch's other processes until :func:`stop` (a no-op without a process group of 2+)."""
    global _watch, _passes
    import torch.distributed as dist

    stop()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    _passes += 1
    _relieve_lightning_observer()
    store = dist.distributed_c10d._get_default_store()
    _watch = _Watch(store, dist.get_rank(), dist.get_world_size(), f"{_PREFIX}/{_passes}")
    _watch.start()


def _relieve_lightning_observer() -> None:
    """Lightning's observer of the processes it started itself (``--devices 2`` from one command: rank 0 is their
    parent) polls them every 5 s and SIGKILLs rank 0 when one has exited non-zero. A rank that ends with the run's
    verdict (1, 2, 3) a moment before rank 0 does is such a process, so rank 0 ended -9 instead of with the same
    status (the swapped-classes baseline test failed on it once). This watch names a dead process instead; the
    observer is told it has no children left and ends."""
    for thread in threading.enumerate():
        if thread.name == "child-process-observer" and hasattr(thread, "_child_processes"):
            thread._child_processes = []


def stop() -> None:
    global _watch
    if _watch is not None:
        _watch.done.set()
        _watch = None


def collective_failed(exc: BaseException) -> BaseException:
    """A collective failed: the interruption this process got too (see the module docstring), else :class:`PeerDied`
    naming which peer died, when the watch can tell within a few beats."""
    stopped = signalled_near(PEER_GRACE_S)
    if stopped is not None:
        return stopped
    watch = _watch
    deadline = time.monotonic() + 4 * BEAT_S
    while watch is not None and watch.dead is None and time.monotonic() < deadline:
        time.sleep(BEAT_S / 5)
    rank = watch.dead if watch is not None else None
    return PeerDied(rank, "" if rank is not None else f"a collective failed: {first_line(exc, 120)}")


class _Watch(threading.Thread):
    def __init__(self, store, rank: int, world: int, prefix: str):
        super().__init__(name="cvt-port-peers", daemon=True)
        self.store, self.rank, self.world, self.prefix = store, rank, world, prefix
        self.done = threading.Event()
        self.dead: int | None = None
        self.host = socket.gethostname()

    def run(self) -> None:
        try:
            self.store.set(f"{self.prefix}/who/{self.rank}", f"{self.host} {os.getpid()}")
        except Exception:  # noqa: BLE001 - the store is rank 0's
            return self._died(0)
        where: dict[int, tuple[str, int]] = {}
        beats: dict[int, tuple[int, float]] = {}
        while not self.done.wait(BEAT_S):
            now = time.monotonic()
            for r, (host, pid) in where.items():  # this node's processes first: no store needed
                if host == self.host and not _alive(pid):
                    return self._died(r)
            try:
                self.store.add(f"{self.prefix}/beat/{self.rank}", 1)
                for r in range(self.world):
                    if r == self.rank:
                        continue
                    if r not in where and self.store.check([f"{self.prefix}/who/{r}"]):
                        host, pid = self.store.get(f"{self.prefix}/who/{r}").decode().split()
                        where[r] = (host, int(pid))
                    if r in where and where[r][0] == self.host:
                        if not _alive(where[r][1]):
                            return self._died(r)
                    elif r in where:
                        count = self.store.add(f"{self.prefix}/beat/{r}", 0)
                        if r not in beats or beats[r][0] != count:
                            beats[r] = (count, now)
                        elif now - beats[r][1] > STALE_S:
                            return self._died(r)
            except Exception:  # noqa: BLE001 - the store is served by rank 0's process
                if self.done.is_set():
                    return
                return self._died(0)

    def _died(self, rank: int) -> None:
        if self.done.is_set() or rank == self.rank:
            return
        stopped = signalled_near(PEER_GRACE_S)  # the peer went with the scancel that reached this process too
        if self.done.is_set():  # the main thread finished the pass meanwhile: it decides
            return
        self.dead = rank
        line = f"interrupted: {stopped}" if stopped is not None else f"error: {PeerDied(rank)}"
        print(line, file=sys.stderr, flush=True)
        sys.stdout.flush()
        # the main thread may be inside a collective that only a timeout ends
        os._exit(int(stopped.exit_status if stopped is not None else PeerDied.exit_status))


def _alive(pid: int) -> bool:
    """A process of this node is running (not gone, not a zombie its parent has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")
