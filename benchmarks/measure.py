"""``python -S -m benchmarks.measure USAGE_FILE COMMAND...``: run COMMAND, write its exit status, wall time,
peak RSS, CPU time and the number of orphans reaped to USAGE_FILE (one line, ``%r`` values).

Why a middleman between the benchmark and every timed command: Linux carries the high-water RSS of the
memory image a process had before exec() into its ru_maxrss, so a child forked straight from the (large)
benchmark process would report at least the benchmark's own RSS; forked from this small stdlib-only process
(``-S``: no site-packages) it reports its own. RUSAGE_CHILDREN would be wrong as well: it keeps the largest
child ever waited for. This process is also a child subreaper, so processes the command leaves behind without
waiting for them (Lightning's DDP rank 0 does not wait for the ranks it launched) are reaped here and their CPU
time counted as the run's. Wall time: fork to the command's own exit. Peak RSS: the largest single process.

Only the standard library: this module must stay small and import nothing of the project.
"""

import os
import sys
import time


def main(argv: list) -> int:
    out, cmd = argv[0], argv[1:]
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # not Linux: orphans are not reaped, the rest holds
        pass
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    maxrss, cpu, orphans = ru.ru_maxrss, ru.ru_utime + ru.ru_stime, 0
    while True:
        try:
            _, _, ru = os.wait4(-1, 0)
        except ChildProcessError:
            break
        orphans += 1
        maxrss, cpu = max(maxrss, ru.ru_maxrss), cpu + ru.ru_utime + ru.ru_stime
    with open(out, "w") as fh:
        fh.write("%r %r %r %r %r" % (rc, wall, maxrss, cpu, orphans))
    return rc if 0 <= rc < 256 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
