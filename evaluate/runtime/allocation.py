"""The processes a launcher started (srun, torchrun), read from the environment and checked against the
device flags before anything is loaded.

Why: Lightning reads SLURM's and torchrun's variables (``SLURMEnvironment``, ``TorchElasticEnvironment``)
but checks them against ``devices``/``num_nodes`` only inside ``trainer.validate``, after the data and
the models are loaded, with a traceback; and with ``devices="auto"`` it counts the GPUs a process sees,
not the processes the launcher started. Here the allocation decides: ``devices="auto"`` becomes the
launcher's processes per node and ``num_nodes=None`` its nodes, and a flag that contradicts them is one
line naming the flag and the variable (exit 2).

What Lightning cannot run is refused the same way: its DDP puts local rank ``r`` on ``cuda:r``, so every
process of a node must see all the node's GPUs. SLURM's per-task binding (``--gpus-per-task=1``, or
``--gpu-bind`` giving each task its own GPU) shows each task one GPU; Lightning would then run each task
alone over all images (devices "auto" = 1 GPU, a single-device strategy), N times the same work into one
output. Allocate ``--ntasks-per-node=N --gpus-per-node=N`` instead (every task sees the N GPUs).

Detection follows Lightning's order: torchrun first (it may run inside a SLURM job), then SLURM. Inside a job step
(srun) the step's own variables decide (``SLURM_STEP_NUM_TASKS``, ``SLURM_STEP_TASKS_PER_NODE``,
``SLURM_STEP_NUM_NODES``): a step may use part of the job's allocation, which the job's variables
(``SLURM_NTASKS_PER_NODE``) still describe. A step of several tasks is one job even when the job is named ``bash`` or
``interactive`` (``srun bash -c ...``, ``srun`` under ``salloc``): Lightning's interactive mode would ignore SLURM
there and run every task alone over all the images into the same output; :func:`evaluate.validation.trainer.make_trainer`
gives Lightning the step instead. Outside a step (no ``SLURM_STEP_NUM_TASKS``) a job of several tasks is refused:
that process is the job's batch script (``sbatch`` without ``srun``), and the tasks it would wait for never start; a job
of one task is one process, and an interactive job (``salloc``'s shell) is no launcher.

Read from the environment only (no torch, no Lightning): the CLI checks the allocation against the flags first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from cvt_port.errors import BadInput

from ..plan import PlanError, RunSpec, parse_devices

GPU_ACCELERATORS = ("auto", "gpu", "cuda")


@dataclass(frozen=True)
class Allocation:
    """Processes started by a launcher: ``per_node`` on each of ``nodes`` nodes, ``world_size`` in all.
    ``names`` are the environment variables each count was read from (named in errors)."""

    launcher: str  # "slurm" or "torchrun"
    world_size: int
    per_node: int
    nodes: int
    rank: int
    names: tuple[str, str]  # (variable of per_node, variable of nodes)


def read_allocation(environ: Mapping[str, str] | None = None) -> Allocation | None:
    """The launcher's allocation, or None when this process was not started by srun or torchrun.
    Variables a launcher always sets but that are missing or unusable are a :class:`PlanError`."""
    env = os.environ if environ is None else environ
    if env.get("TORCHELASTIC_RUN_ID") is not None:  # torch.distributed.is_torchelastic_launched()
        world = _count(env, "WORLD_SIZE")
        local = _count(env, "LOCAL_WORLD_SIZE")
        if world % local:
            raise PlanError("run.num_nodes", f"torchrun's WORLD_SIZE={world} is not a multiple of "
                            f"LOCAL_WORLD_SIZE={local}: start the same {launcher_option('nproc_per_node')} on every node")
        return Allocation("torchrun", world, local, world // local, int(env.get("RANK", "0")),
                          ("LOCAL_WORLD_SIZE", "WORLD_SIZE/LOCAL_WORLD_SIZE"))
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        step = _slurm_step(env)
        if step.world_size > 1 or not _slurm_interactive(env):
            return step
        return None  # one task of an interactive step (srun --pty bash, salloc): a process alone
    if "SLURM_NTASKS" in env and not _slurm_interactive(env):
        ntasks = _count(env, "SLURM_NTASKS")
        if ntasks > 1:
            raise BadInput(batch_step_refusal(env, ntasks))
        return Allocation("slurm", 1, 1, 1, 0, ("SLURM_NTASKS", "SLURM_NNODES"))
    return None


def batch_step_refusal(env: Mapping[str, str], ntasks: int) -> str:
    """Why a process outside any job step of a job of several tasks cannot run: it is the job's batch script
    (``sbatch`` runs it once, on the first node), so the job's other tasks never start and a wait for them would
    never end. The tasks are started by ``srun`` (a job step: ``SLURM_STEP_NUM_TASKS`` is set)."""
    return (f"SLURM_NTASKS={ntasks}: this process is the batch script of SLURM job {env.get('SLURM_JOB_ID', '?')}, "
            f"one process, not a job step of its {ntasks} tasks (no SLURM_STEP_NUM_TASKS), so the other tasks would "
            f"never start; launch it with srun in the script: srun python -m evaluate ...")


def _slurm_interactive(env: Mapping[str, str]) -> bool:
    """Lightning's interactive mode (``srun --pty bash``, ``salloc``): a job named bash or interactive."""
    return env.get("SLURM_JOB_NAME") in ("bash", "interactive")


def _slurm_step(env: Mapping[str, str]) -> Allocation:
    """The job step this process is a task of, from the variables srun sets for the step itself. The job's
    (``SLURM_NTASKS_PER_NODE``, ``SLURM_JOB_NUM_NODES``) describe the allocation, which a step may use only part
    of: ``sbatch --ntasks-per-node=4`` then ``srun --ntasks=2`` is a step of 2 tasks with 4 in the job's variables.
    Lightning needs as many tasks on every node (its ``devices``), so a step spread unevenly is refused."""
    ntasks = _count(env, "SLURM_STEP_NUM_TASKS")
    nodes = _slurm_int(env, "SLURM_STEP_NUM_NODES") or 1
    text = env.get("SLURM_STEP_TASKS_PER_NODE") or str(ntasks)
    counts = _per_node_counts(text)
    if counts is None:
        raise PlanError("run.devices", f"srun set SLURM_STEP_TASKS_PER_NODE={text!r}, not a list of task counts")
    if len(set(counts)) > 1 or sum(counts) != ntasks or len(counts) != nodes:
        raise PlanError("run.devices", f"the job step's {ntasks} tasks are spread unevenly over its {nodes} node(s) "
                        f"(SLURM_STEP_TASKS_PER_NODE={text}); every node must run as many (one per device): launch "
                        f"with {launcher_option('ntasks-per-node=N')} instead of {launcher_option('ntasks')}")
    return Allocation("slurm", ntasks, counts[0], nodes, int(env.get("SLURM_PROCID", "0")),
                      ("SLURM_STEP_TASKS_PER_NODE", "SLURM_STEP_NUM_NODES"))


def _per_node_counts(text: str) -> list[int] | None:
    """SLURM's tasks-per-node list, expanded: ``2(x3),1`` -> ``[2, 2, 2, 1]``."""
    out: list[int] = []
    for part in text.split(","):
        count, _, times = part.strip().partition("(x")
        try:
            n, k = int(count), int(times.rstrip(")")) if times else 1
        except ValueError:
            return None
        if n <= 0 or k <= 0:
            return None
        out += [n] * k
    return out or None


def launch_id(environ: Mapping[str, str] | None = None) -> str | None:
    """What names this launch on every one of its processes (None when this process runs alone): SLURM's job
    and step, or torchrun's run id with its rendezvous address. Shared-path writers use it to tell a result
    this launch made from one an earlier launch left."""
    env = os.environ if environ is None else environ
    alloc = read_allocation(env)
    if alloc is None or alloc.world_size <= 1:
        return None
    if alloc.launcher == "slurm":
        return f"slurm:{env.get('SLURM_JOB_ID')}.{env.get('SLURM_STEP_ID', env.get('SLURM_STEPID'))}"
    return f"torchrun:{env.get('TORCHELASTIC_RUN_ID')}@{env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')}"


def process_start_time() -> float:
    """When this process started (seconds since the epoch; Linux ``/proc``, else now)."""
    import time

    try:
        ticks = int(open("/proc/self/stat", encoding="ascii").read().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in open("/proc/stat", encoding="ascii") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def launcher_option(name: str) -> str:
    """An option of srun/sbatch or torchrun as the user types it. Library errors never spell this program's
    flags (they name plan fields, the CLI shows its flags); the launcher's options are the user's to change."""
    return f"--{name}"


def visible_gpus(environ: Mapping[str, str] | None = None) -> int:
    """The GPUs this process can use (``CUDA_VISIBLE_DEVICES`` when set, else what torch counts)."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    import torch

    return torch.cuda.device_count()


def resolve_devices(spec: RunSpec, environ: Mapping[str, str] | None = None) -> tuple[int | str | list, int]:
    """``(devices, num_nodes)`` for Lightning's Trainer: from the allocation when the flags leave them open,
    checked against it when they do not. Raises a one-line :class:`PlanError` naming flag and variable."""
    env = os.environ if environ is None else environ
    devices = parse_devices(spec.devices)
    alloc = read_allocation(env)
    if alloc is None:
        return devices, 1 if spec.num_nodes is None else spec.num_nodes
    per_node_var, nodes_var = alloc.names
    where = f"{alloc.launcher} started {alloc.world_size} process(es), {alloc.per_node} per node"
    if spec.num_nodes is not None and spec.num_nodes != alloc.nodes:
        raise PlanError("run.num_nodes", f"does not match {nodes_var}={alloc.nodes} ({where}): drop "
                        f"run.num_nodes (it is read from the allocation) or allocate {spec.num_nodes} node(s)",
                        spec.num_nodes)
    count = _device_count(devices)
    if count is not None and count != alloc.per_node:
        raise PlanError("run.devices", f"does not match {per_node_var}={alloc.per_node} ({where}; each process "
                        f"drives one device): drop run.devices or launch {count} process(es) per node", spec.devices)
    if spec.accelerator in GPU_ACCELERATORS and alloc.per_node > 1:
        gpus = visible_gpus(env)
        if 0 < gpus < alloc.per_node:
            raise PlanError("run.devices", _binding_hint(alloc, gpus, env))
    return (alloc.per_node if devices == "auto" else devices), alloc.nodes


def _binding_hint(alloc: Allocation, gpus: int, env: Mapping[str, str]) -> str:
    n = alloc.per_node
    seen = f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}" if "CUDA_VISIBLE_DEVICES" in env else "torch"
    if alloc.launcher == "slurm":
        return (f"each of the {n} SLURM tasks on a node sees {gpus} GPU(s) ({seen}), but every task must see all "
                f"the node's GPUs (Lightning puts local rank r on cuda:r): allocate with --ntasks-per-node={n} "
                f"--gpus-per-node={n} instead of --gpus-per-task=1")
    return (f"torchrun starts {n} processes per node but each sees {gpus} GPU(s) ({seen}): make all {n} GPUs "
            f"visible to every process, or pass --nproc_per_node={gpus}")


def _device_count(devices) -> int | None:
    """How many devices a ``devices`` value names (None for "auto" or -1: whatever is there)."""
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices != "auto":
        ids = [d for d in devices.split(",") if d.strip()]
        return len(ids) if ids else None
    return None


def _count(env: Mapping[str, str], name: str) -> int:
    value = _slurm_int(env, name)
    if value is None:
        raise PlanError("run.devices", f"the launcher set {name}={env.get(name)!r}, not a positive count")
    return value


def _slurm_int(env: Mapping[str, str], name: str) -> int | None:
    """A positive count; SLURM may write per-node counts as ``4(x2)``."""
    try:
        n = int(str(env.get(name)).split("(")[0])
    except ValueError:
        return None
    return n if n > 0 else None
