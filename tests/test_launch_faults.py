"""A launch's processes end together and say why: a DataLoader worker killed by the same SIGTERM as its
process is the interruption (143 on every task, never an internal error), and a task that dies (``kill -9``)
is noticed in seconds and named on the survivors, which exit 3 (not made) with one line.

Real processes (signals and a dying process are the point): two tasks of a simulated ``srun`` step (the
variables a 22.05 srun exports, :func:`test_slurm_step.srun_step`), 2 CPU processes, 12 tiny images decoded
slowly so that the pass is still running when the test acts; every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit import wnids
from imagegen import make_imagefolder
from test_slurm_step import srun_step

from evaluate.runtime.interrupts import Interrupted, _note, interruption

# each DataLoader worker (and with --num-workers 0 the task itself) writes its pid on its first image, then
# decodes slowly: the pass lasts a few seconds
SLOW = """
import os, sys, time
import evaluate.pixels.dataset
decode = evaluate.pixels.dataset.EvalDataset.__getitem__
def slow(self, i):
    mark = os.path.join(os.environ["MARKS"], "reader-" + os.environ["SLURM_PROCID"])
    if not os.path.exists(mark):
        open(mark + ".tmp", "w").write(str(os.getpid())); os.replace(mark + ".tmp", mark)
    open(mark + ".log", "a").write(f"{i}\\n")
    time.sleep(float(os.environ.get("SLOW_S", "0.4")))
    return decode(self, i)
evaluate.pixels.dataset.EvalDataset.__getitem__ = slow
from evaluate.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "val"
    make_imagefolder(root, wnids(4, step=53), per_class=3)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_step(tiny, data, tmp_path, workers: int, **more: str) -> list[subprocess.Popen]:
    marks = tmp_path / "marks"
    marks.mkdir()
    port = str(free_port())
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC"))}
    argv = ["--model", tiny["hf"], "--config", tiny["yaml"], "--data", data, "--output", tmp_path / "out",
            "--accelerator", "cpu", "--num-workers", str(workers), "--batch-size", "2"]
    return [subprocess.Popen([sys.executable, "-c", SLOW, *map(str, argv)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**base, **srun_step(2, job_per_node=2, procid=rank), "MARKS": str(marks),
                                  "MASTER_PORT": port, **more})
            for rank in range(2)]


def reader_pid(tmp_path: Path, rank: int, timeout: float = 120) -> int:
    mark = tmp_path / "marks" / f"reader-{rank}"
    deadline = time.monotonic() + timeout
    while not mark.exists():
        assert time.monotonic() < deadline, "the pass never started"
        time.sleep(0.05)
    return int(mark.read_text())


def finish(procs: list[subprocess.Popen], timeout: float = 60) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a task hung: " + " | ".join(q.communicate()[1][-1500:] for q in procs))
        out.append((p.returncode, err))
    return out


def test_a_worker_dead_of_the_scancel_is_the_interruption_on_every_task(tiny, data, tmp_path):
    """scancel signals every process of the step; here rank 0's DataLoader worker gets its SIGTERM first and dies of
    it before rank 0's own handler has run (300 ms later); rank 1 gets none and ends through the fault exchange."""
    procs = start_step(tiny, data, tmp_path, workers=1)
    worker = reader_pid(tmp_path, 0)
    os.kill(worker, signal.SIGTERM)
    time.sleep(0.3)
    procs[0].send_signal(signal.SIGTERM)
    ended = finish(procs)
    assert [rc for rc, _ in ended] == [143, 143], [err[-2000:] for _, err in ended]
    for _, err in ended:
        assert "internal error" not in err and "Traceback" not in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_worker_death_reads_as_the_signal_that_caused_it():
    died = "DataLoader worker (pid(s) 4242) exited unexpectedly"
    assert interruption(RuntimeError(died), grace_s=0.05) is None  # no signal anywhere: a real crash
    assert interruption(RuntimeError("DataLoader worker (pid 7) exited unexpectedly with exit code 143. Details are "
                                     "lost")).exit_status == 143  # our handler's exit in a worker
    assert interruption(RuntimeError("DataLoader worker (pid 7) is killed by signal: Interrupt. ")).exit_status == 130
    assert interruption(RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. "), grace_s=0.05) is None
    assert interruption(ValueError(died)) is None
    _note(signal.SIGINT)  # this process just got Ctrl-C: any worker death is that interruption
    assert isinstance(interruption(RuntimeError(died)), Interrupted)
    assert interruption(RuntimeError(died)).exit_status == 130
    assert interruption(RuntimeError("boom")) is None


def test_a_task_that_dies_is_noticed_in_seconds_and_named(tiny, data, tmp_path):
    """kill -9 of rank 1 while rank 0 still has most of its share to decode (1 s an image): rank 0 stops at once
    with one line naming process 1, exit 3 (not made), no gloo traceback and no report."""
    procs = start_step(tiny, data, tmp_path, workers=0, SLOW_S="1.0")
    reader_pid(tmp_path, 0)
    assert reader_pid(tmp_path, 1) == procs[1].pid  # --num-workers 0: the task decodes itself
    procs[1].kill()
    (rc, err), _ = finish(procs)
    assert rc == 3, err[-3000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1] == ("error: process 1 of the launch died; no verdict, no report: rerun the launch"), err[-3000:]
    assert "Traceback" not in err and "gloo" not in err.lower()
    decoded = (tmp_path / "marks" / "reader-0.log").read_text().split()
    assert len(decoded) < 6  # rank 0 stopped before the end of its share (6 images)
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_peer_gone_with_a_signal_pending_is_the_interruption(tiny, data, tmp_path):
    """scancel signals every task at once; here rank 1 vanishes (kill -9) and rank 0's SIGTERM follows 0.1 s later:
    rank 0 went with the same stop, so it ends as interrupted (143, its line), not with a dead peer (3)."""
    procs = start_step(tiny, data, tmp_path, workers=0, SLOW_S="1.0")
    reader_pid(tmp_path, 0)
    reader_pid(tmp_path, 1)
    procs[1].kill()
    time.sleep(0.1)
    procs[0].send_signal(signal.SIGTERM)
    (rc, err), _ = finish(procs)
    assert rc == 143, err[-3000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1] == "interrupted: SIGTERM: stopped before the gate's verdict; no report written", err[-3000:]
    assert "died" not in err and "Traceback" not in err
    assert not (tmp_path / "out" / "report.json").exists()


WAIT_FOR_A_PEER = """
import sys
from evaluate.cli import outcome
def work():
    import torch.distributed as dist
    print("waiting", flush=True)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[1], world_size=2, rank=0)
    return 0
sys.exit(outcome(work))
"""


def test_a_signal_is_seen_while_the_main_thread_waits_in_c():
    """A process waiting for a peer that never comes (the process group's rendezvous: a C call in which Python runs
    no signal handler) still ends on SIGTERM, with its line and 143, not after torch's 30-minute timeout."""
    proc = subprocess.Popen([sys.executable, "-c", WAIT_FOR_A_PEER, str(free_port())], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(1.0)  # inside the rendezvous
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM did not end a process waiting for its peer: " + proc.communicate()[1][-1500:])
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines() == ["interrupted: SIGTERM: stopped before the gate's verdict; no report written"]


def test_the_signal_watch_ends_with_its_run_not_after_its_next_poll(monkeypatch):
    """The thread that reads the signals on arrival ends as soon as its run does: the run's end wakes it. It used to
    sleep out its poll (0.5 s) first, and every command, a one-line refusal included, waited that long to exit.
    With a poll of a minute the thread must still be gone when the run's ``with`` is left."""
    import threading

    from evaluate.runtime import interrupts

    monkeypatch.setattr(interrupts, "WATCH_POLL_S", 60.0)
    with interrupts.sigterm_raises():
        watch = next(t for t in threading.enumerate() if t.name == "cvt-port-signals")
        assert watch.is_alive()
    assert not watch.is_alive()
