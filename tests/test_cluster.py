"""On a cluster: the processes srun or torchrun started decide the world size and ranks, a device flag that
contradicts them (or a GPU binding Lightning cannot run) is one line and exit 2 before any data or model is
read, one process writes each shared path (the demo's converted model) while the others wait and reuse it, and
a pixel cache is built by all processes together, each decoding its share. Launchers are simulated with their
environment variables; processes are real."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit import evaluate_cli, wnids
from imagegen import make_imagefolder, write_corrupt

from evaluate.runtime.allocation import read_allocation
from evaluate.api import evaluate_model
from evaluate.plan import PlanError, RunSpec
from evaluate.validation.trainer import make_trainer

LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK",
               "CUDA_VISIBLE_DEVICES")


def slurm(ntasks: int, per_node: int | None, nodes: int = 1, procid: int = 0, step: bool = True, **more) -> dict[str, str]:
    """Task ``procid`` of an ``srun`` step of ``ntasks`` tasks (``step=False``: the job's batch script, no step)."""
    env = {"SLURM_NTASKS": str(ntasks), "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid % (per_node or 1)),
           "SLURM_NODEID": str(procid // (per_node or 1)), "SLURM_NNODES": str(nodes), "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "cvt-eval", "SLURM_NODELIST": "localhost"}
    if per_node is not None:
        env["SLURM_NTASKS_PER_NODE"] = str(per_node)
    if step:
        env.update({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": str(ntasks), "SLURM_STEP_NUM_NODES": str(nodes),
                    "SLURM_STEP_TASKS_PER_NODE": f"{per_node or ntasks // nodes}" + (f"(x{nodes})" if nodes > 1 else ""),
                    "SLURM_STEP_NODELIST": "localhost"})
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
    from lightning.fabric.plugins.environments import SLURMEnvironment

    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)


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
    launched(slurm(ntasks=4, per_node=4, step=False, SLURM_JOB_NAME="interactive"))  # salloc's shell
    assert read_allocation() is None
    assert make_trainer(RunSpec(accelerator="cpu", devices=1)).world_size == 1


@pytest.mark.parametrize("env, run, needle", [
    (slurm(ntasks=4, per_node=4), dict(devices="2"), "run.devices 2: does not match SLURM_STEP_TASKS_PER_NODE=4"),
    (slurm(ntasks=4, per_node=2, nodes=2), dict(num_nodes=1), "run.num_nodes 1: does not match SLURM_STEP_NUM_NODES=2"),
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


# --------------------------------------------------------------------------- one writer per shared path

# Each process appends one line per image it decodes (or per conversion it makes) to COUNT_LOG, then runs as usual.
COUNTING = """
import os, sys, time
import evaluate.pixels.dataset, cvt_port
def log(what):
    with open(os.environ["COUNT_LOG"], "a") as fh:
        fh.write(f"{os.getpid()} {what}\\n")
decode = evaluate.pixels.dataset.EvalDataset.__getitem__
def counted(self, i):
    log(f"decode {i}")
    time.sleep(0.05)  # a decode long enough for the builders to overlap
    return decode(self, i)
evaluate.pixels.dataset.EvalDataset.__getitem__ = counted
convert = cvt_port.convert
def counted_convert(*a, **k):
    log("convert")
    time.sleep(0.5)
    return convert(*a, **k)
cvt_port.convert = counted_convert
"""


def start_all(code: str, envs: list[dict[str, str]]) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-c", COUNTING + code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for env in envs]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "val"
    make_imagefolder(root, wnids(4, step=53), per_class=3)
    return root


def cache_build_code(data, cache, tiny, before: str = "") -> str:
    argv = ["cache", "build", "--model", tiny["hf"], "--config", tiny["yaml"], "--data", data, "--cache-dir", cache,
            "--num-workers", "0"]
    return before + f"\nfrom evaluate.cli import main; sys.exit(main({[str(a) for a in argv]!r}))"


def decodes_per_process(log: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in log.read_text().splitlines():
        pid, what, *index = line.split()
        if what == "decode":
            out.setdefault(pid, []).append(int(index[0]))
    return out


def file_digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def single_process_cache(tiny, data, tmp_path_factory):
    """The cache one process builds alone (no launcher): what a shared build must equal byte for byte."""
    cache = tmp_path_factory.mktemp("single") / "cache"
    r = evaluate_cli("cache", "build", "--model", tiny["hf"], "--config", tiny["yaml"], "--data", data,
                     "--cache-dir", cache, "--num-workers", "0", env=clean_env())
    assert r.returncode == 0, r.stderr[-2000:]
    return cache


def test_srun_tasks_build_one_cache_together_each_decoding_its_share(tiny, data, tmp_path, single_process_cache):
    log, cache = tmp_path / "count.log", tmp_path / "cache"
    code = cache_build_code(data, cache, tiny)
    runs = start_all(code, [clean_env(COUNT_LOG=str(log), **slurm(ntasks=2, per_node=2, procid=i)) for i in range(2)])
    assert [r.returncode for r in runs] == [0] * 2, [r.stderr[-2000:] for r in runs]
    assert all("cache of 12 images" in r.stdout for r in runs)
    shares = sorted(decodes_per_process(log).values())
    assert sorted(i for share in shares for i in share) == list(range(12))  # every image decoded once in all
    assert [sorted(share) for share in shares] == [list(range(0, 6)), list(range(6, 12))]
    verify = evaluate_cli("cache", "verify", "--cache-dir", cache)
    assert verify.returncode == 0 and "12 images, modes release: intact" in verify.stdout
    assert file_digests(cache) == file_digests(single_process_cache)  # byte for byte a one-process build
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "count.log"]  # no staging, parts or lock left
    shared, alone = (evaluate_model(model=tiny["hf"], config=tiny["yaml"], data=data, cache_dir=c, accelerator="cpu",
                                    devices=1, num_workers=0, summary=False) for c in (cache, single_process_cache))
    assert shared.predictions == alone.predictions and len({p.top[shared.primary] for p in shared.predictions}) > 1


def test_a_builder_that_dies_ends_the_others_with_one_line_and_a_rerun_decodes_only_its_share(
        tiny, data, tmp_path, single_process_cache):
    log, cache = tmp_path / "count.log", tmp_path / "cache"
    # rank 1 lives (its sign of life changes) until rank 0's part is done, then is killed mid-build
    dies = f"""
import evaluate.pixels.cache_parts, glob; evaluate.pixels.cache_parts.PART_WAIT_S = 2
def live_then_die(self, i):
    while not glob.glob({str(tmp_path)!r} + "/.cache.build-*/part-0-of-2"):
        [os.utime(f) for f in glob.glob({str(tmp_path)!r} + "/.cache.build-*/alive-1-of-2")]
        time.sleep(0.1)
    os._exit(137)
if os.environ['SLURM_PROCID'] == '1':
    evaluate.pixels.dataset.EvalDataset.__getitem__ = live_then_die
"""
    envs = [clean_env(COUNT_LOG=str(log), **slurm(ntasks=2, per_node=2, procid=i, SLURM_STEP_ID="0")) for i in range(2)]
    runs = start_all(cache_build_code(data, cache, tiny, dies), envs)
    assert [r.returncode for r in runs] == [2, 137], [r.stderr[-2000:] for r in runs]
    for r in runs[:1]:
        lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("caching")]  # rank 0's bar
        assert len(lines) == 1 and "part-1-of-2 (rank(s) 1) not finished and no sign of life for 2 s" in lines[0]
        assert "rerun the build (finished parts are reused)" in lines[0] and "Traceback" not in r.stderr
    assert not cache.exists()  # nothing published
    log.write_text("")
    runs = start_all(cache_build_code(data, cache, tiny), [{**e, "SLURM_STEP_ID": "1"} for e in envs])  # the rerun
    assert [r.returncode for r in runs] == [0] * 2, [r.stderr[-2000:] for r in runs]
    assert sorted(i for share in decodes_per_process(log).values() for i in share) == list(range(6, 12))
    assert file_digests(cache) == file_digests(single_process_cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "count.log"]


def test_a_bad_image_in_one_share_ends_every_builder_with_its_line(tiny, data, tmp_path):
    bad_data = tmp_path / "val"
    shutil.copytree(data, bad_data)
    write_corrupt(sorted(bad_data.iterdir())[1] / "broken.JPEG")
    cache = tmp_path / "cache"
    wait = "import evaluate.pixels.cache_parts; evaluate.pixels.cache_parts.PART_WAIT_S = 60\n"
    runs = start_all(cache_build_code(bad_data, cache, tiny, wait),
                     [clean_env(COUNT_LOG=str(tmp_path / "log"), **slurm(ntasks=2, per_node=2, procid=i)) for i in range(2)])
    assert [r.returncode for r in runs] == [2] * 2, [r.stderr[-2000:] for r in runs]
    lines = {r.stderr.strip().splitlines()[-1] for r in runs}
    assert len(lines) == 1 and "broken.JPEG: cannot decode image" in lines.pop()  # the failing share's line, on all
    assert not cache.exists()


def test_demo_under_srun_converts_once_and_every_task_uses_that_folder(tmp_path):
    log, out = tmp_path / "count.log", tmp_path / "out"
    code = (f"from evaluate.default import demo_plan; from evaluate.plan import ReportSpec; "
            f"p = demo_plan(report=ReportSpec(output={str(out)!r})); print(p.models.model)")
    envs = [clean_env(COUNT_LOG=str(log), **slurm(ntasks=2, per_node=2, procid=i, SLURM_STEP_ID="0")) for i in range(2)]
    runs = start_all(code, envs)
    assert [r.returncode for r in runs] == [0] * 2, [r.stderr[-2000:] for r in runs]
    assert [line.split()[1] for line in log.read_text().splitlines()] == ["convert"]
    assert sum("converted by another process of this launch" in r.stderr for r in runs) == 1
    folder = out / "cvt-tiny-digits-hf"
    assert {r.stdout.strip() for r in runs} == {str(folder)} and (folder / "conversion.json").is_file()
    # the next launch (another job step) converts afresh: a stamp is only good for its own launch
    runs = start_all(code, [{**envs[0], "SLURM_STEP_ID": "1"}])
    assert runs[0].returncode == 0 and log.read_text().count("convert") == 2


def test_demo_alone_converts_every_time(tmp_path, launched):
    from evaluate.runtime.allocation import launch_id

    launched(slurm(ntasks=1, per_node=1))
    assert launch_id() is None  # one process: nothing to share, the demo converts as always
    launched(slurm(ntasks=2, per_node=2, SLURM_STEP_ID="7"))
    assert launch_id() == "slurm:4242.7"
