"""Peak RSS of every process of a command: its main process, each DDP rank and each DataLoader worker.

Why: :mod:`benchmarks.measure` gives the largest single process's high-water mark, which says nothing about the
workers (a worker that copies the list of all samples grows with the data set) nor about the second rank. A
thread of the benchmark reads ``/proc/<pid>/status`` (``VmHWM``, the kernel's own high-water mark of that
process, so a poll between two peaks loses nothing but a process's last instants) of every descendant of the
command 20 times a second. Roles: ``pt_data_worker`` is the name PyTorch gives its DataLoader workers; a rank
launched by Lightning has ``LOCAL_RANK`` in its environment; the first process under the middleman is rank 0.
Only a process that runs a Python interpreter (``/proc/<pid>/exe``) is a rank: a helper program a rank starts
(``ldconfig``, ``uname``, a shell) inherits ``LOCAL_RANK`` and was once listed as a rank of a few hundred KiB.
A process is listed once its memory was read alive: one that ends between two polls (a DataLoader worker of a
tiny pass lives a few tenths of a second) is seen, if at all, as a zombie with no memory left, and is not listed
with a made-up 0. A poll (every process's ``/proc/<pid>/stat``) costs about 1.3 ms of CPU here: 2.7 % of one core
at 20 polls a second. Linux only (elsewhere the list is empty).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PROC = Path("/proc")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _read(pid: int) -> tuple[str, int | None, str | None, bool] | None:
    try:
        comm = (PROC / str(pid) / "comm").read_text().strip()
        status = (PROC / str(pid) / "status").read_text()
        python = os.path.basename(os.readlink(PROC / str(pid) / "exe")).startswith("python")
    except OSError:
        return None
    hwm = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
    rank = None
    try:
        env = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
        rank = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"LOCAL_RANK=")), None)
    except OSError:
        pass
    return comm, hwm, rank, python


class TreePeaks:
    """Polls the descendants of ``root`` (the middleman's pid) until :meth:`stop`; :meth:`processes` lists each
    process seen: role (``rank 0``, ``rank 1``, ``worker of rank 0``, ...), peak RSS (MiB)."""

    def __init__(self, root: int, interval: float = 0.05):
        self.root, self.interval = root, interval
        self.seen: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "TreePeaks":
        if PROC.is_dir():
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def poll(self) -> None:
        for pid in _descendants(self.root):
            got = _read(pid)
            if got is None or got[1] is None:  # gone, or a zombie (no memory left to read): nothing measured
                continue
            comm, hwm, rank, python = got
            rec = self.seen.setdefault(pid, {"pid": pid, "comm": comm, "rank": rank, "peak_kib": 0})
            rec["comm"], rec["rank"], rec["python"] = comm, rec["rank"] or rank, python
            rec["peak_kib"] = max(rec["peak_kib"], hwm)
            try:
                rec["ppid"] = int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def processes(self) -> list[dict]:
        """One entry per process that ran Python (the middleman's direct child is rank 0)."""
        ranks = {pid: (r["rank"] or "0") for pid, r in self.seen.items()
                 if r["python"] and r["comm"] != "pt_data_worker"
                 and (r.get("ppid") == self.root or r["rank"] is not None)}
        out = []
        for pid, r in sorted(self.seen.items()):
            if pid in ranks:
                role = f"rank {ranks[pid]}"
            elif r["comm"] == "pt_data_worker":
                role = f"worker of rank {ranks.get(r.get('ppid'), '?')}"
            else:
                role = f"other ({r['comm']})"
            out.append({"role": role, "pid": pid, "peak_rss_mib": round(r["peak_kib"] / 1024, 1)})
        return out
