"""What the benchmark tests need to run the benchmarks' code in seconds: their timed commands in this process,
and one torch thread while they run. The tests check figures and records, they time nothing (a benchmark
measures), so neither changes what they prove."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import resource
import runpy
import sys
import time
import warnings

import torch

from benchmarks.timing import ProcessRunner


@contextlib.contextmanager
def one_torch_thread():
    """torch's intra-op threads set to 1 meanwhile: on a busy 2-core machine two threads per operation wait for
    each other (a tiny CvT's batch of 4 took seconds instead of milliseconds)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


TINY_TIMEOUT_S = 300


class InProcessRunner(ProcessRunner):
    """:class:`ProcessRunner`'s records, but ``python -m MODULE ARGS`` runs in this process (``runpy``, as
    ``-m`` does: the module's own ``__main__`` code, ``sys.argv`` set, its exit status from ``SystemExit``);
    commands on several devices (DDP starts its ranks as processes) still run as real measured processes.
    ``peak_rss_mib`` is this process's high-water mark, ``cpu_s`` this process's and its children's CPU time
    while the command ran."""

    def run(self, name: str, cmd: list, timeout: float = 1800, cwd=None, env=None, per_process: bool = False) -> dict:
        cmd = [str(c) for c in cmd]
        devices = cmd[cmd.index("--devices") + 1] if "--devices" in cmd else "1"
        if cmd[:2] != [sys.executable, "-m"] or devices != "1" or env:
            # a tiny command takes seconds: a hang fails its test in minutes, not after the real benchmark's hours
            return super().run(name, cmd, timeout=min(timeout, TINY_TIMEOUT_S), cwd=cwd, env=env,
                               per_process=per_process)
        self.count += 1
        log = self.logs / f"{self.count:03d}-{name}.err"
        out, err = io.StringIO(), io.StringIO()
        usage = lambda: sum(ru.ru_utime + ru.ru_stime for ru in map(  # noqa: E731
            resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
        argv, cpu0, t0 = sys.argv, usage(), time.perf_counter()
        try:
            sys.argv = [cmd[2], *cmd[3:]]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
                try:
                    runpy.run_module(cmd[2], run_name="__main__", alter_sys=True)
                    rc = 0
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv
            gc.unfreeze()  # the entry points freeze the heap before their exit
        wall = time.perf_counter() - t0
        log.write_text(err.getvalue())
        return {"name": name, "cmd": cmd, "rc": rc, "timed_out": False, "wall_s": round(wall, 3),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "cpu_s": round(usage() - cpu0, 2), "orphans_reaped": 0, "stdout": out.getvalue(),
                "stderr_tail": err.getvalue()[-1500:], "log": str(log),
                **({"processes": [{"role": "rank 0", "pid": os.getpid(), "peak_rss_mib": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}]} if per_process else {})}
