"""Counts forks whose child hangs inside ``os.fork`` beside gloo's threads, with and without the fork guard.

Not a test (a race of microseconds, a few in 10,000 forks): the figures behind :mod:`evaluate.runtime.fork_guard`.
Each trial is its own process: a one-process gloo group whose two worker threads finish collectives on tensors made
in Python (each gives back its Python object from a native thread: a thread state made, the thread-list lock taken
without the GIL), while the main thread forks children that exit at once; a child not ended in 2 s is counted and
killed.

    python tests/fork_trials.py 5000        # plain, then guarded
"""

from __future__ import annotations

import subprocess
import sys
import time

TRIAL = r"""
import os, signal, sys, threading, time
import torch, torch.distributed as dist
from evaluate.runtime import fork_guard
n, guarded = int(sys.argv[1]), sys.argv[2] == "guarded"
if guarded:
    fork_guard.install()
dist.init_process_group("gloo", store=dist.HashStore(), world_size=1, rank=0)
stop = False
def churn():
    while not stop:
        works = [dist.all_reduce(torch.ones(1), async_op=True) for _ in range(20)]
        del works
        time.sleep(0)
threading.Thread(target=churn, daemon=True).start()
hung = 0
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    end = time.monotonic() + 2
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > end:
            hung += 1
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.0005)
stop = True
print(hung, flush=True)
os._exit(0)
"""


def trial(n: int, guarded: bool) -> int:
    """The number of the ``n`` children that hung."""
    out = subprocess.run([sys.executable, "-c", TRIAL, str(n), "guarded" if guarded else "plain"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for guarded in [False, True]:  # plain first, then with the guard
        t0 = time.perf_counter()
        hung = trial(n, guarded)
        print(f"{'guarded' if guarded else 'plain  '}: {hung} of {n} children hung in os.fork "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
