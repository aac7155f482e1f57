"""On a real SLURM 22.05 cluster (slurmctld, slurmd and munge started by the module's fixture, :mod:`slurmkit`):
every task of a job ends with the same status and one line, whatever ends it.

One cluster for the module (one node ``c1`` on loopback; two nodes ``n1``, ``n2`` in network namespaces); every
job is submitted at once and acted on by its own thread (``scancel`` at three moments, ``kill -9`` of either rank),
then each test reads its job's outcome. The tasks are :mod:`slurm_task` (the real CLI, 12 tiny images read slowly;
it records each task's pid, the images read and the exit status). Where slurm-wlm, munge or root is missing, the
tests fail with one line saying what to install (``.ci/run`` installs them).

What one node cannot show (several nodes' variables, GPU binding) stays in test_cluster.py and test_slurm_step.py,
with SLURM's variables set by hand.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import slurmkit
from evalkit import wnids
from imagegen import make_imagefolder

TASK = Path(__file__).with_name("slurm_task.py")
DIED = "error: process {} of the launch died; no verdict, no report: rerun the launch"
TERMINATED = "interrupted: SIGTERM: stopped before the gate's verdict; no report written"


@dataclass
class Job:
    """One job: what it runs, what is done to it, and what came of it."""

    name: str
    options: list[str]
    script: str  # the batch script's body; {task} is the task's command
    slow_s: float = 0.05
    figures: bool = False  # on the 101 half-right images (figures to compare), else on 12 images read slowly
    act: str | None = None  # "scancel:<images read by rank 0>", "kill:<rank>"
    marks: Path | None = None
    out: Path | None = None
    id: str | None = None
    acted_at: float | None = None
    notes: dict = field(default_factory=dict)

    def rc(self, rank) -> int | None:
        path = self.marks / f"rc-{rank}"
        return int(path.read_text()) if path.exists() else None

    def rc_time(self, rank) -> float:
        return (self.marks / f"rc-{rank}").stat().st_mtime

    def stderr(self, rank) -> list[str]:
        """What the task wrote on stderr, without slurmstepd's own ``*** STEP 5.0 ON node CANCELLED ***``."""
        path = self.marks / f"err-{rank}"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return [line for line in lines if line.strip() and not line.startswith("slurmstepd")]

    def report(self) -> dict | None:
        path = self.out / "report.json"
        return json.loads(path.read_text()) if path.exists() else None

    def read(self, rank) -> int:
        path = self.marks / f"read-{rank}.log"
        return len(path.read_text().splitlines()) if path.exists() else 0


SRUN = "srun -e {marks}/err-%t -o {marks}/out-%t {task}\n"
TORCHRUN = ("srun -e {marks}/agent-%t -o {marks}/agent-out-%t {python} -m torch.distributed.run --nnodes 2 "
            "--nproc_per_node 1 --rdzv-backend c10d --rdzv-endpoint n1:{port} --rdzv-id {name} "
            "--redirects 3 --log-dir {marks}/logs {task_script}\n")


def jobs_to_run() -> list[Job]:
    one = ["-p", "one", "--nodes=1"]
    two = ["-p", "two", "--nodes=2", "--ntasks-per-node=1"]
    return [
        Job("two_tasks", [*one, "--ntasks-per-node=2"], SRUN, figures=True),
        Job("part_of_four", [*one, "--ntasks-per-node=4"], SRUN.replace("srun ", "srun --ntasks=2 "), figures=True),
        Job("batch_without_srun", [*one, "--ntasks-per-node=2"], "{task} 2> {marks}/err-batch\n"),
        Job("scancel_at_start", [*one, "--ntasks-per-node=2"], SRUN, slow_s=0.5, act="scancel:start"),
        Job("scancel_in_pass", [*one, "--ntasks-per-node=2"], SRUN, slow_s=0.5, act="scancel:1"),
        Job("scancel_late", [*one, "--ntasks-per-node=2"], SRUN, slow_s=0.5, act="scancel:4"),
        Job("kill_rank0", [*one, "--ntasks-per-node=2"], SRUN, slow_s=1.0, act="kill:0"),
        Job("kill_rank1", [*one, "--ntasks-per-node=2"], SRUN, slow_s=1.0, act="kill:1"),
        Job("two_nodes", two, SRUN, figures=True),
        Job("two_nodes_scancel", two, SRUN, slow_s=0.5, act="scancel:1"),
        Job("torchrun_two_agents", two, TORCHRUN, figures=True),
    ]


def act(cluster: slurmkit.Cluster, job: Job, deadline: float) -> None:
    """Wait for the moment the job's action names, then act (scancel, or SIGKILL of one rank's process)."""
    what, _, arg = job.act.partition(":")
    while time.monotonic() < deadline:
        started = [job.marks / f"started-{r}" for r in (0, 1)]
        if what == "scancel" and arg == "start" and all(p.exists() for p in started):
            break  # both tasks checked the launch: importing Lightning, transformers, loading the model
        if what == "scancel" and arg != "start" and job.read(0) >= int(arg):
            break  # rank 0 is in the pass
        if what == "kill" and job.read(0) >= 1 and job.read(1) >= 1:
            break  # both ranks in the pass, most of their shares ahead (1 s an image)
        if job.rc(0) is not None or job.rc(1) is not None:
            return
        time.sleep(0.05)
    else:
        return
    job.acted_at = time.time()
    if what == "scancel":
        cluster.scancel(job.id)
    else:
        os.kill(int((job.marks / f"pid-{arg}").read_text()), signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurmkit.missing()
    if why:
        pytest.fail(why, pytrace=False)
    c = slurmkit.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except RuntimeError as exc:
        c.stop()
        pytest.fail(str(exc), pytrace=False)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "val"
    make_imagefolder(root, wnids(4, step=53), per_class=3)
    return root


@pytest.fixture(scope="module")
def half_right(tmp_path_factory):
    """101 images the tiny model gets about half right (evalkit): top-1 and top-5 figures worth comparing."""
    from evalkit import make_half_right_imagefolder

    root = tmp_path_factory.mktemp("half") / "val"
    make_half_right_imagefolder(root)
    return root


@pytest.fixture(scope="module")
def alone(tiny, half_right):
    """The one-process run's figures on the half-right images, in process."""
    from evaluate.api import evaluate_model

    return evaluate_model(model=tiny["hf"], config=tiny["yaml"], data=half_right, accelerator="cpu", devices=1,
                          num_workers=0, batch_size=2, summary=False)


@pytest.fixture(scope="module")
def jobs(cluster, tiny, data, half_right, tmp_path_factory) -> dict[str, Job]:
    """Every job submitted at once, each acted on by its own thread; all ended (or stopped) when this returns."""
    work = tmp_path_factory.mktemp("jobs")
    out: dict[str, Job] = {}
    for job in jobs_to_run():
        if job.options[1] == "two" and cluster.two_nodes_error:
            continue
        job.marks, job.out = work / job.name, work / job.name / "out"
        job.marks.mkdir()
        argv = ["--model", tiny["hf"], "--config", tiny["yaml"], "--data", half_right if job.figures else data,
                "--output", job.out,
                "--accelerator", "cpu", "--num-workers", "0", "--batch-size", "2"]
        task_script = " ".join(map(str, [TASK, job.marks, *argv]))
        script = job.script.format(task=f"{sys.executable} {task_script}", task_script=task_script,
                                   marks=job.marks, python=sys.executable, port=slurmkit.free_port(), name=job.name)
        job.id = cluster.sbatch(script, *job.options, f"--job-name={job.name}", f"--output={job.marks}/batch.out",
                                cwd=job.marks, env=cluster.env(SLOW_S=str(job.slow_s), OMP_NUM_THREADS="1"))
        out[job.name] = job
    deadline = time.monotonic() + 400
    threads = [threading.Thread(target=act, args=(cluster, j, deadline)) for j in out.values() if j.act]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while any(cluster.running(j.id) for j in out.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return out


def outcome(job: Job, ranks=(0, 1)) -> str:
    return " | ".join(f"rank {r}: rc {job.rc(r)}, {job.stderr(r)[-3:]}" for r in ranks) + \
        f" | batch: {(job.marks / 'batch.out').read_text()[-1500:] if (job.marks / 'batch.out').exists() else ''}"


def test_a_job_of_two_tasks_is_one_job_of_world_size_two(jobs, alone):
    assert 0 < alone.top1 < 100 and alone.top1 < alone.top5  # figures that can differ
    for name in ("two_tasks", "part_of_four"):  # the second: srun --ntasks=2 inside an allocation of 4
        job = jobs[name]
        assert job.rc(0) == job.rc(1) == alone.exit_status, outcome(job)
        rep = job.report()
        assert (rep["world_size"], rep["devices"], rep["num_nodes"], rep["num_samples"]) == (2, 2, 1, 101), name
        assert (rep["top1"], rep["top5"], rep["gate"]) == (alone.top1, alone.top5, alone.record["gate"]), name
        assert rep["cluster_environment"] == "SLURMEnvironment"
        assert job.stderr(1) == []  # rank 1 says nothing; rank 0 the summary


def test_the_batch_script_without_srun_is_refused_in_one_line(jobs):
    job = jobs["batch_without_srun"]
    assert job.rc("batch") == 2, outcome(job, ["batch"])
    assert job.stderr("batch") == [f"error: SLURM_NTASKS=2: this process is the batch script of SLURM job {job.id}, "
                                   "one process, not a job step of its 2 tasks (no SLURM_STEP_NUM_TASKS), so the other "
                                   "tasks would never start; launch it with srun in the script: srun python -m evaluate ..."]
    assert not job.out.exists()


@pytest.mark.parametrize("name", ["scancel_at_start", "scancel_in_pass", "scancel_late"])
def test_scancel_ends_every_task_with_143_and_its_line(jobs, name):
    job = jobs[name]
    assert job.acted_at is not None, outcome(job)
    assert job.rc(0) == job.rc(1) == 143, outcome(job)
    for rank in (0, 1):
        assert job.stderr(rank)[-1] == TERMINATED, outcome(job)
        assert not [line for line in job.stderr(rank) if "Traceback" in line or "error" in line.lower()]
    assert job.report() is None


@pytest.mark.parametrize("dead", [0, 1])
def test_a_killed_rank_is_named_on_the_survivor_in_one_line(jobs, dead):
    job = jobs[f"kill_rank{dead}"]
    survivor = 1 - dead
    assert job.acted_at is not None, outcome(job)
    assert job.rc(dead) == 137 and job.rc(survivor) == 3, outcome(job)
    lines = job.stderr(survivor)
    if survivor == 0:  # rank 0 shows the progress bar of the pass before the line
        lines = [line for line in lines if not line.lstrip().startswith(("Validation", "evaluating", "\r"))]
    assert lines == [DIED.format(dead)], outcome(job)
    assert job.read(survivor) < 6  # it stopped before the end of its share
    assert job.report() is None


def test_two_nodes_in_namespaces_make_one_job_with_the_one_process_figures(jobs, cluster, alone):
    """sbatch --nodes=2 --ntasks-per-node=1 (srun), and torchrun --nnodes 2 (an agent per node, c10d rendezvous on
    n1): one job of world size 2 over 2 nodes, the one-process figures."""
    assert cluster.two_nodes_error is None, cluster.two_nodes_error
    for name, environment in (("two_nodes", "SLURMEnvironment"), ("torchrun_two_agents", "TorchElasticEnvironment")):
        job = jobs[name]
        assert job.rc(0) == job.rc(1) == alone.exit_status, outcome(job)
        rep = job.report()
        assert (rep["world_size"], rep["devices"], rep["num_nodes"], rep["num_samples"]) == (2, 1, 2, 101), name
        assert (rep["top1"], rep["top5"], rep["gate"]) == (alone.top1, alone.top5, alone.record["gate"]), name
        assert rep["cluster_environment"] == environment


def test_scancel_across_two_nodes_ends_both_with_143(jobs, cluster):
    assert cluster.two_nodes_error is None, cluster.two_nodes_error
    job = jobs["two_nodes_scancel"]
    assert job.acted_at is not None, outcome(job)
    assert job.rc(0) == job.rc(1) == 143, outcome(job)
    for rank in (0, 1):
        assert job.stderr(rank)[-1] == TERMINATED


def test_a_missing_tool_or_root_fails_with_one_line_saying_what_to_install():
    """Where slurm-wlm, munge or root is missing the cluster's fixture fails with this line (no skip)."""
    absent = {"slurmctld", "slurmd", "sbatch", "srun", "scancel", "squeue", "sinfo", "munged"}  # no slurm-wlm, munge
    assert slurmkit.missing(lambda name: None if name.rsplit("/", 1)[-1] in absent else name) == (
        "a real SLURM cluster needs slurmctld, slurmd, sbatch, srun, scancel, squeue, sinfo, munged: "
        "apt-get install -y slurm-wlm munge (as root)")
    assert slurmkit.missing(lambda name: name, euid=1000).startswith("a real SLURM cluster is started as root")
    assert slurmkit.missing(lambda name: name, euid=0) is None
