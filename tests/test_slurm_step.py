"""Under SLURM the job step decides, not the job: a step may use part of its allocation (``sbatch
--ntasks-per-node=4`` then ``srun --ntasks=2``), and a step of several tasks is one job even in a job that
Lightning takes for an interactive shell (``srun bash -c ...``, ``srun`` under ``salloc``).

The environments are the variables a SLURM 22.05 ``srun`` exports to each task of a step (srun(1), "OUTPUT
ENVIRONMENT VARIABLES", and sbatch(1)/salloc(1) for those the step inherits from its job; CPU binding, GPU and
site variables left out):

  from the job (sbatch/salloc):  SLURM_JOB_ID SLURM_JOBID SLURM_JOB_NAME SLURM_JOB_NODELIST SLURM_JOB_NUM_NODES
                                 SLURM_NTASKS_PER_NODE (only when sbatch/salloc had --ntasks-per-node: the job's)
                                 SLURM_JOB_CPUS_PER_NODE SLURM_SUBMIT_DIR SLURM_SUBMIT_HOST SLURM_CLUSTER_NAME
  set by srun for the step:      SLURM_NTASKS SLURM_NPROCS SLURM_NNODES SLURM_NODELIST SLURM_TASKS_PER_NODE
                                 SLURM_STEP_ID SLURM_STEPID SLURM_STEP_NUM_TASKS SLURM_STEP_NUM_NODES
                                 SLURM_STEP_TASKS_PER_NODE SLURM_STEP_NODELIST SLURM_STEP_LAUNCHER_PORT
                                 SLURM_SRUN_COMM_HOST SLURM_SRUN_COMM_PORT
  per task:                      SLURM_PROCID SLURM_LOCALID SLURM_NODEID SLURM_TASK_PID SLURM_GTIDS
"""

from __future__ import annotations

import os

import pytest

from evaluate.runtime.allocation import launch_id, read_allocation, resolve_devices
from evaluate.plan import PlanError, RunSpec
from evaluate.validation.trainer import cluster_environment, make_trainer


def srun_step(step_tasks: int, job_per_node: int | None, *, procid: int = 0, job_name: str = "eval.sbatch",
              step_per_node: str | None = None, step_nodes: int = 1, job_nodes: int = 1) -> dict[str, str]:
    """Task ``procid`` of ``srun --ntasks=step_tasks`` inside a job allocated with ``--ntasks-per-node=job_per_node``
    (None: the job was allocated with --ntasks only), on one node unless said."""
    per_node = step_per_node or str(step_tasks // step_nodes)
    env = {
        "SLURM_JOB_ID": "5151", "SLURM_JOBID": "5151", "SLURM_JOB_NAME": job_name, "SLURM_JOB_NODELIST": "node1",
        "SLURM_JOB_NUM_NODES": str(job_nodes), "SLURM_JOB_CPUS_PER_NODE": "8", "SLURM_SUBMIT_DIR": "/tmp",
        "SLURM_SUBMIT_HOST": "node1", "SLURM_CLUSTER_NAME": "test",
        "SLURM_NTASKS": str(step_tasks), "SLURM_NPROCS": str(step_tasks), "SLURM_NNODES": str(step_nodes),
        "SLURM_NODELIST": "localhost", "SLURM_TASKS_PER_NODE": per_node,
        "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_STEP_NUM_TASKS": str(step_tasks),
        "SLURM_STEP_NUM_NODES": str(step_nodes), "SLURM_STEP_TASKS_PER_NODE": per_node,
        "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_LAUNCHER_PORT": "41234", "SLURM_SRUN_COMM_HOST": "127.0.0.1",
        "SLURM_SRUN_COMM_PORT": "41235",
        "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid), "SLURM_NODEID": "0", "SLURM_TASK_PID": "100",
        "SLURM_GTIDS": ",".join(map(str, range(step_tasks))),
    }
    if job_per_node is not None:
        env["SLURM_NTASKS_PER_NODE"] = str(job_per_node)
    return env


@pytest.fixture
def launched(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK",
                                                 "LOCAL_RANK", "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(name)

    def launch(env: dict[str, str]) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    return launch


def test_a_step_of_part_of_the_job_is_read_from_the_step(launched):
    launched(srun_step(2, job_per_node=4, procid=1))  # sbatch --ntasks-per-node=4; srun --ntasks=2
    alloc = read_allocation()
    assert (alloc.world_size, alloc.per_node, alloc.nodes, alloc.rank) == (2, 2, 1, 1)
    for devices in ("auto", "2"):  # the correct --devices 2 is accepted, and auto is the step's 2
        trainer = make_trainer(RunSpec(accelerator="cpu", devices=devices))
        assert (trainer.world_size, trainer.num_devices, trainer.global_rank) == (2, 2, 1)
        assert cluster_environment(trainer) == "SLURMEnvironment"
    with pytest.raises(PlanError) as err:  # the job's 4 is not this step's
        resolve_devices(RunSpec(accelerator="cpu", devices="4"))
    assert "run.devices 4: does not match SLURM_STEP_TASKS_PER_NODE=2" in str(err.value)


def test_a_multi_task_step_of_an_interactive_job_is_one_job(launched):
    """``srun -n2 bash -c 'python -m evaluate ...'`` (job named bash) or srun under salloc (interactive): Lightning
    alone would ignore SLURM and run each task over every image into the same output."""
    for name in ("bash", "interactive"):
        launched(srun_step(2, job_per_node=None, procid=1, job_name=name))
        trainer = make_trainer(RunSpec(accelerator="cpu"))
        assert (trainer.world_size, trainer.num_devices, trainer.global_rank, trainer.local_rank) == (2, 2, 1, 1)
        assert cluster_environment(trainer) == "SLURMEnvironment"
        assert launch_id() == "slurm:5151.0"  # its processes share the demo's conversion and a cache build
    launched(srun_step(1, job_per_node=None, job_name="bash"))  # srun --pty bash: one task, a process alone
    assert read_allocation() is None and make_trainer(RunSpec(accelerator="cpu", devices=1)).world_size == 1


def test_a_step_spread_unevenly_over_its_nodes_is_refused(launched):
    launched(srun_step(3, job_per_node=None, step_per_node="2,1", step_nodes=2, job_nodes=2))
    with pytest.raises(PlanError) as err:
        resolve_devices(RunSpec(accelerator="cpu"))
    assert "tasks are spread unevenly over its 2 node(s) (SLURM_STEP_TASKS_PER_NODE=2,1)" in str(err.value)
    launched(srun_step(4, job_per_node=None, step_per_node="2(x2)", step_nodes=2, job_nodes=2))
    assert resolve_devices(RunSpec(accelerator="cpu")) == (2, 2)


def test_a_contradicting_flag_is_refused_before_the_demo_converts(launched, tmp_path, capsys):
    from evaluate.cli import main

    launched(srun_step(2, job_per_node=4))
    out = tmp_path / "out"
    assert main(["--accelerator", "cpu", "--devices", "3", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line for line in err if line.startswith("error: --devices 3: does not match "
                                                           "SLURM_STEP_TASKS_PER_NODE=2")] and len(err) == 1
    assert not out.exists()  # the conversion wrote nothing


def batch_script(ntasks: int, per_node: int | None) -> dict[str, str]:
    """The batch script of ``sbatch --ntasks-per-node=per_node`` (or ``--ntasks``): the job's variables, no step's
    (what SLURM 22.05 exports to it, as a real cluster showed)."""
    step = srun_step(ntasks, job_per_node=per_node)
    return {k: v for k, v in step.items() if not k.startswith(("SLURM_STEP", "SLURM_SRUN")) and k != "SLURM_STEPID"}


def test_the_batch_script_of_a_job_of_several_tasks_is_refused_saying_srun(launched, tmp_path):
    """``sbatch --ntasks-per-node=2`` whose script runs ``python -m evaluate`` without srun: one process that would
    wait for a second that never starts. Refused in one line; a job of one task runs as one process."""
    from evalkit import evaluate_cli

    launched(batch_script(2, per_node=2))
    r = evaluate_cli("--model", tmp_path / "no-model", "--data", tmp_path / "no-data", "--output", tmp_path / "out",
                     env=dict(os.environ))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "error: SLURM_NTASKS=2: this process is the batch script of SLURM job 5151, one process, not a job step of its "
        "2 tasks (no SLURM_STEP_NUM_TASKS), so the other tasks would never start; launch it with srun in the script: "
        "srun python -m evaluate ..."]
    assert not (tmp_path / "out").exists()
    launched(batch_script(1, per_node=None))
    assert read_allocation().world_size == 1


def test_a_step_of_ntasks_without_ntasks_per_node_is_one_job_of_them(launched):
    """``srun --ntasks=3`` (no --ntasks-per-node anywhere): the step's 3 tasks on its one node are one job of 3."""
    launched(srun_step(3, job_per_node=None, procid=2))
    assert resolve_devices(RunSpec(accelerator="cpu")) == (3, 1)
    assert read_allocation().world_size == 3


REFUSE = """
import sys
from evaluate.cli import main
status = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "lightning", "transformers", "torchmetrics", "datasets") if m in sys.modules)
print(" ".join(heavy) or "none")
sys.exit(status)
"""


@pytest.mark.parametrize("env, argv, start", [
    (srun_step(2, job_per_node=2, procid=1), ["--devices", "4"], "error: --devices 4: does not match"),
    (batch_script(2, per_node=2), [], "error: SLURM_NTASKS=2: this process is the batch script"),
])
def test_a_launch_is_refused_before_torch_and_lightning_are_imported(tmp_path, env, argv, start):
    """A refusal reads the environment and the flags only: one line, exit 2, and none of the heavy packages
    imported (they were most of the start-up; ``python -m benchmarks.startup`` measures it)."""
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC", "MASTER_"))}
    r = subprocess.run([sys.executable, "-c", REFUSE, *argv, "--output", str(tmp_path / "out")], capture_output=True,
                       text=True, env={**base, **env}, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(start)
    assert r.stdout.split() == ["none"]
