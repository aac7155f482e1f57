"""On a cluster: the processes srun or torchrun started decide the world size and ranks, a device flag that
contradicts them (or a GPU binding Lightning cannot run) is one line and exit 2 before any data or model is
read, and one process writes each shared path (the demo's converted model, a pixel cache) while the others
wait and reuse it. Launchers are simulated with their environment variables; processes are real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit import evaluate_cli, wnids
from imagegen import make_imagefolder

from evaluate.allocation import read_allocation
from evaluate.api import evaluate_model
from evaluate.plan import PlanError, RunSpec
from evaluate.trainer import make_trainer

LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK",
               "CUDA_VISIBLE_DEVICES")


def slurm(ntasks: int, per_node: int | None, nodes: int = 1, procid: int = 0, **more) -> dict[str, str]:
    env = {"SLURM_NTASKS": str(ntasks), "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid % (per_node or 1)),
           "SLURM_NODEID": str(procid // (per_node or 1)), "SLURM_NNODES": str(nodes), "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "cvt-eval", "SLURM_NODELIST": "localhost"}
    if per_node is not None:
        env["SLURM_NTASKS_PER_NODE"] = str(per_node)
    return {**env, **more}


def torchrun(world: int, local: int, rank: int = 0) -> dict[str, str]:
    return {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(local),
            "RANK": str(rank), "LOCAL_RANK": str(rank % local), "GROUP_RANK": str(rank // local),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}


@pytest.fixture
def launched(monkeypatch):
    """Set a simulated launcher's variables (and only those) for this test."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in LAUNCH_VARS:
            monkeypatch.delenv(name)

    def launch(env: dict[str, str]) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    return launch


def clean_env(**more) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("SLURM_") or k in LAUNCH_VARS)}
    return {**env, **more}


# --------------------------------------------------------------------------- world size and ranks


def test_srun_tasks_make_one_job_with_devices_auto(launched):
    launched(slurm(ntasks=4, per_node=2, nodes=2, procid=3))
    trainer = make_trainer(RunSpec(accelerator="cpu"))
    assert (trainer.world_size, trainer.num_nodes, trainer.num_devices) == (4, 2, 2)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (3, 1, 1)
    assert type(trainer.strategy.cluster_environment).__name__ == "SLURMEnvironment"


def test_torchrun_processes_make_one_job_with_devices_auto(launched):
    launched(torchrun(world=6, local=3, rank=4))
    trainer = make_trainer(RunSpec(accelerator="cpu"))
    assert (trainer.world_size, trainer.num_nodes, trainer.num_devices) == (6, 2, 3)
    assert (trainer.global_rank, trainer.local_rank) == (4, 1)
    assert type(trainer.strategy.cluster_environment).__name__ == "TorchElasticEnvironment"


def test_torchrun_wins_inside_a_slurm_job_as_in_lightning(launched):
    launched({**slurm(ntasks=1, per_node=1), **torchrun(world=2, local=2, rank=1)})
    assert read_allocation().launcher == "torchrun"
    assert make_trainer(RunSpec(accelerator="cpu")).world_size == 2


def test_interactive_slurm_shell_is_no_launcher(launched):
    launched(slurm(ntasks=4, per_node=4, SLURM_JOB_NAME="interactive"))
    assert read_allocation() is None
    assert make_trainer(RunSpec(accelerator="cpu", devices=1)).world_size == 1


@pytest.mark.parametrize("env, run, needle", [
    (slurm(ntasks=4, per_node=4), dict(devices="2"), "run.devices 2: does not match SLURM_NTASKS_PER_NODE=4"),
    (slurm(ntasks=4, per_node=2, nodes=2), dict(num_nodes=1), "run.num_nodes 1: does not match SLURM_NNODES=2"),
    (slurm(ntasks=4, per_node=None), {}, "SLURM_NTASKS=4 without SLURM_NTASKS_PER_NODE: allocate with --ntasks-per-node"),
    (torchrun(world=4, local=2), dict(devices="4"), "run.devices 4: does not match LOCAL_WORLD_SIZE=2"),
    (torchrun(world=4, local=2), dict(num_nodes=1), "run.num_nodes 1: does not match WORLD_SIZE/LOCAL_WORLD_SIZE=2"),
    (torchrun(world=4, local=2), dict(devices="0,1,2"), "run.devices 0,1,2: does not match LOCAL_WORLD_SIZE=2"),
])
def test_flags_that_contradict_the_allocation_are_refused_before_the_data(launched, tmp_path, env, run, needle):
    launched(env)
    with pytest.raises(PlanError) as err:  # the data path does not exist: the allocation is checked first
        evaluate_model(model=tmp_path / "no-model", data=tmp_path / "no-data", accelerator="cpu", **run)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_per_task_gpu_binding_is_refused_with_the_allocation_to_use(launched, tmp_path):
    launched(slurm(ntasks=4, per_node=4, SLURM_GPUS_PER_TASK="1", CUDA_VISIBLE_DEVICES="0"))
    with pytest.raises(PlanError) as err:
        evaluate_model(model=tmp_path / "no-model", data=tmp_path / "no-data")
    assert "--ntasks-per-node=4 --gpus-per-node=4 instead of --gpus-per-task=1" in str(err.value)


def test_per_task_gpu_binding_on_the_command_line_is_one_line_exit_2(tmp_path):
    env = clean_env(**slurm(ntasks=2, per_node=2, procid=1, SLURM_GPUS_PER_TASK="1", CUDA_VISIBLE_DEVICES="1"))
    r = evaluate_cli("--model", tmp_path / "no-model", "--data", tmp_path / "no-data", env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --devices: each of the 2 SLURM tasks on a node sees 1 GPU")
    assert "CUDA_VISIBLE_DEVICES=1" in lines[0] and "Traceback" not in r.stderr


def test_devices_mismatch_on_the_command_line_names_flag_and_variable(tmp_path):
    env = clean_env(**torchrun(world=2, local=2))
    r = evaluate_cli("--model", tmp_path / "no-model", "--data", tmp_path / "no-data", "--accelerator", "cpu",
                     "--devices", "1", env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --devices 1: does not match LOCAL_WORLD_SIZE=2 (torchrun started 2 process(es), 2 per node; each "
        "process drives one device): drop --devices or launch 1 process(es) per node"]
