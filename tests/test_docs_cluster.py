"""The cluster page's examples (docs/cluster.md) match the code: every command in them parses, and the allocation
their sbatch header makes (and the torchrun launch) resolves to one job over every GPU, with no flag to add;
the binding the page warns against is refused as it says."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from evaluate.runtime.allocation import resolve_devices
from evaluate.cli import build_parser, plan_parts
from evaluate.plan import PlanError, default_num_workers

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"


def cluster_section() -> str:
    return PAGE.read_text(encoding="utf-8")


def code_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def commands(block: str) -> list[list[str]]:
    """The shell commands of a block, continuation lines joined, comments and #SBATCH lines left out."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line.replace("$USER", "me").replace("$SLURM_JOB_ID", "123")))
    return out


def evaluate_args(argv: list[str]) -> list[str]:
    """The arguments after ``-m evaluate`` (and after ``cache build``)."""
    rest = argv[argv.index("evaluate") + 1:]
    return rest[2:] if rest[:2] == ["cache", "build"] else rest


def sbatch_env(block: str) -> tuple[dict[str, str], int, int]:
    opts = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", block, re.M))
    nodes, per_node = int(opts["nodes"]), int(opts["ntasks-per-node"])
    gpus = int(opts["gpus-per-node"])
    env = {"SLURM_NTASKS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_NNODES": str(nodes),
           "SLURM_JOB_NAME": "eval.sbatch", "SLURM_PROCID": "5", "SLURM_CPUS_PER_TASK": opts["cpus-per-task"],
           "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus)),
           # the page's commands run under srun: a task of a step of the job's every task
           "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": str(nodes * per_node), "SLURM_STEP_NUM_NODES": str(nodes),
           "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{nodes})"}
    return env, per_node, nodes


def test_the_sbatch_example_is_one_job_over_every_gpu_of_the_allocation():
    sbatch = next(b for b in code_blocks(cluster_section()) if "#SBATCH" in b)
    env, per_node, nodes = sbatch_env(sbatch)
    runs = [c for c in commands(sbatch) if c[:1] == ["srun"]]
    assert len(runs) == 2 and any("cache" in c for c in runs)
    for argv in runs:
        args = build_parser().parse_args(evaluate_args(argv))
        run = plan_parts(args)[2]
        assert resolve_devices(run, env) == (per_node, nodes)
    # the task's CPUs, bounded by what this test process may use
    assert default_num_workers(env) == min(8, int(env["SLURM_CPUS_PER_TASK"]), len(os.sched_getaffinity(0)))


def test_the_torchrun_example_is_one_job_over_its_processes():
    block = next(b for b in code_blocks(cluster_section()) if "torchrun" in b)
    (argv,) = commands(block)
    n = int(argv[argv.index("--nproc_per_node") + 1])
    env = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n), "RANK": "3",
           "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(n))}
    run = plan_parts(build_parser().parse_args(evaluate_args(argv)))[2]
    assert resolve_devices(run, env) == (n, 1)


def test_the_binding_the_page_warns_against_is_refused_as_it_says():
    sbatch = next(b for b in code_blocks(cluster_section()) if "#SBATCH" in b)
    env, per_node, _ = sbatch_env(sbatch)
    env["CUDA_VISIBLE_DEVICES"] = "0"  # --gpus-per-task=1: each task sees its own GPU
    argv = [c for c in commands(sbatch) if c[:1] == ["srun"]][-1]
    run = plan_parts(build_parser().parse_args(evaluate_args(argv)))[2]
    with pytest.raises(PlanError, match=f"--ntasks-per-node={per_node} --gpus-per-node={per_node} instead of "
                                        "--gpus-per-task=1"):
        resolve_devices(run, env)
    assert "--gpus-per-task=1" in cluster_section()
