"""Shared timing helpers of the benchmarks: the process runner, medians and ratios, targets, disturbance.

Every timed command runs as its own process under :mod:`benchmarks.measure` (wall time, peak RSS, CPU time);
the harness's throughput comes from the ``images_per_second`` its report.json records. A ratio is always kept
with its numerator and denominator, so results.json shows what it was computed from.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TARGETS = {
    "harness_overhead": (">=", 0.90),
    "cache_speedup": (">=", 10.0),
    "conversion_wall": ("<=", 1.5),
    "conversion_rss": ("<=", 1.5),
    "sdpa_max_abs_logit_diff": ("<=", 1e-5),
}


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def ratio(numerator, denominator) -> dict:
    """{"numerator", "denominator", "value" = numerator / denominator (None when not computable)}."""
    ok = isinstance(numerator, (int, float)) and isinstance(denominator, (int, float)) and denominator != 0
    return {"numerator": numerator, "denominator": denominator, "value": numerator / denominator if ok else None}


def met(value, target: str):
    """Whether ``value`` meets the target named ``target`` (None when there is no value)."""
    if not isinstance(value, (int, float)):
        return None
    op, bound = TARGETS[target]
    return value >= bound if op == ">=" else value <= bound


def target_dict(name: str) -> dict:
    op, bound = TARGETS[name]
    return {"op": op, "value": bound}


def fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "n/a"


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def first(runs, get):
    """``get(run)`` of the first run it works on (None if none)."""
    for r in runs:
        try:
            return get(r)
        except (KeyError, TypeError, IndexError):
            continue
    return None


def cpu_times() -> dict:
    """Busy CPU seconds of the whole machine, and those of this process and its waited-for children."""
    import resource

    busy = None
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest is already in user)
        busy = (vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)) / os.sysconf(
            "SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    own = sum(ru.ru_utime + ru.ru_stime for ru in map(resource.getrusage,
                                                         (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
    return {"machine_busy_s": busy, "own_s": own, "t": time.perf_counter(), "loadavg": list(os.getloadavg())}


def disturbance(start: dict, end: dict) -> dict:
    """CPU time other processes used between two :func:`cpu_times` (machine busy time minus ours)."""
    wall = end["t"] - start["t"]
    foreign = None
    if start["machine_busy_s"] is not None and end["machine_busy_s"] is not None:
        foreign = max(0.0, (end["machine_busy_s"] - start["machine_busy_s"]) - (end["own_s"] - start["own_s"]))
    share = foreign / (wall * (os.cpu_count() or 1)) if foreign is not None and wall > 0 else None
    return {"wall_s": round(wall, 2), "loadavg_before": start["loadavg"], "loadavg_after": end["loadavg"],
            "foreign_cpu_s": None if foreign is None else round(foreign, 2),
            "foreign_cpu_share": None if share is None else round(share, 4)}


def slim(rec: dict) -> dict:
    """A run record for results.json (no full stdout)."""
    return {k: v for k, v in rec.items() if k != "stdout"}


class ProcessRunner:
    """Runs commands as measured subprocesses (see :mod:`benchmarks.measure`); logs go to ``work/logs``."""

    def __init__(self, work: Path, verbose: bool = False):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.verbose = verbose
        self.count = 0
        env = dict(os.environ)
        env["HF_HUB_OFFLINE"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.env = env

    def module(self, name: str, module: str, *args, **kw) -> dict:
        """:meth:`run` of ``python -m module args...``."""
        return self.run(name, [sys.executable, "-m", module, *args], **kw)

    def run(self, name: str, cmd: list, timeout: float = 1800, cwd: Path | None = None,
            env: dict | None = None) -> dict:
        """Run ``cmd`` to its end (killed with its process group after ``timeout`` s); its measured record."""
        self.count += 1
        cmd = [str(c) for c in cmd]
        if not os.path.isabs(cmd[0]):
            cmd[0] = shutil.which(cmd[0]) or cmd[0]
        stem = self.logs / f"{self.count:03d}-{name}"
        out_path, err_path, usage_path = stem.with_suffix(".out"), stem.with_suffix(".err"), stem.with_suffix(".usage")
        if self.verbose:
            progress(f"  $ {' '.join(cmd)}")
        t0 = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, "-S", "-m", "benchmarks.measure", str(usage_path), *cmd],
                                    cwd=str(cwd or self.work), env={**self.env, **(env or {})}, stdout=out,
                                    stderr=err, start_new_session=True)
            killed = []

            def kill():
                killed.append(True)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                proc.wait()
            except BaseException:
                kill()
                proc.wait()
                raise
            finally:
                timer.cancel()
        outer_wall = time.perf_counter() - t0
        try:
            rc, wall, maxrss_kib, cpu, orphans = (float(v) for v in usage_path.read_text().split())
            rc, orphans = int(rc), int(orphans)
        except (OSError, ValueError):  # killed (timeout) before measure could write
            rc, wall, maxrss_kib, cpu, orphans = proc.returncode, outer_wall, None, None, None
        return {
            "name": name,
            "cmd": cmd,
            "rc": rc,
            "timed_out": bool(killed),
            "wall_s": round(wall, 3),  # the command alone, fork to exit (measure's own start not included)
            "peak_rss_mib": None if maxrss_kib is None else round(maxrss_kib / 1024, 1),  # KiB on Linux
            "cpu_s": None if cpu is None else round(cpu, 2),  # the command and every descendant
            "orphans_reaped": orphans,
            "stdout": out_path.read_text(errors="replace"),
            "stderr_tail": err_path.read_text(errors="replace")[-1500:],
            "log": str(err_path),
        }
