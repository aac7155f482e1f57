"""Speed and launch options of python -m evaluate: cache, fused attention, compile, bf16, torchrun, SLURM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from evalkit import evaluate_cli, tiny_img_size, wnids
from imagegen import make_imagefolder

from test_evaluate import read_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "val"
    make_imagefolder(root, wnids(6, step=37), per_class=4)
    return root


def args(tiny, data, out, *more):
    return ["--model", tiny["hf"], "--config", tiny["yaml"], "--data", data, "--output", out, "--reference", tiny["pth"],
            "--accelerator", "cpu", "--num-workers", "0", "--batch-size", "8", *more]


def report(out):
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def jpeg_run(tiny, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("jpeg")
    r = evaluate_cli(*args(tiny, data, out))
    assert r.returncode == 3 and "GATE: NOT MADE" in r.stdout, r.stderr[-3000:]  # 24 images: no check has power
    return out


def test_cache_gives_bit_identical_predictions_and_refuses_other_settings(tiny, data, jpeg_run, tmp_path):
    cache = tmp_path / "cache"
    r = evaluate_cli("cache", "build", "--model", tiny["hf"], "--config", tiny["yaml"], "--data", data,
                     "--cache-dir", cache, "--num-workers", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    r = evaluate_cli(*args(tiny, data, tmp_path / "out", "--cache-dir", cache))
    assert r.returncode == 3, r.stderr[-3000:]
    assert read_csv(jpeg_run / "predictions.csv") == read_csv(tmp_path / "out" / "predictions.csv")
    a, b = report(jpeg_run), report(tmp_path / "out")
    assert (a["top1"], a["max_abs_logit_diff"]) == (b["top1"], b["max_abs_logit_diff"]) and b["cache"] == str(cache)
    # other images, other settings: refused, never silently reused
    r = evaluate_cli(*args(tiny, data, tmp_path / "o2", "--cache-dir", cache, "--subset", "12"))
    assert r.returncode == 2 and "another image list" in r.stderr.strip().splitlines()[-1]
    r = evaluate_cli(*args(tiny, data, tmp_path / "o3", "--cache-dir", cache, "--preprocessing", "both"))
    assert r.returncode == 2 and f"cache {cache}" in r.stderr.strip().splitlines()[-1]


def test_sdpa_attention_keeps_logits_within_1e5(tiny, data, jpeg_run, tmp_path):
    r = evaluate_cli(*args(tiny, data, tmp_path, "--attention", "sdpa"))
    assert r.returncode == 3, r.stderr[-3000:]
    rep = report(tmp_path)
    assert rep["attention"] == "sdpa" and rep["max_abs_logit_diff"] <= 1e-5
    assert [p["pred1"] for p in read_csv(tmp_path / "predictions.csv")] == [
        p["pred1"] for p in read_csv(jpeg_run / "predictions.csv")]


def test_bf16_mixed_is_judged_against_the_float32_original(tiny, data, jpeg_run, tmp_path):
    r = evaluate_cli(*args(tiny, data, tmp_path, "--precision", "bf16-mixed"))
    rep, fp32 = report(tmp_path), report(jpeg_run)
    assert r.returncode == (1 if rep["agreement"] < 0.999 else 3), r.stderr[-3000:]  # a disagreement fails at any size
    assert rep["precision"] == "bf16-mixed" and rep["num_samples"] == 24
    assert 0 < rep["max_abs_logit_diff"] and rep["agreement"] is not None
    # the original runs in float32 outside autocast: exactly the float32 run's original
    assert rep["reference_top1"] == fp32["reference_top1"]
    assert [p["reference_top1"] for p in read_csv(tmp_path / "predictions.csv")] == [
        p["reference_top1"] for p in read_csv(jpeg_run / "predictions.csv")]


def test_compile_pads_the_short_last_batch_instead_of_recompiling(tiny, data, jpeg_run, tmp_path, monkeypatch):
    """24 images in batches of 10: the last batch holds 4 and is padded to 10, so one graph per model, compiled
    before the pass. torch.compile runs with dynamo's ``aot_eager`` backend here, counting the graphs it is given:
    guards, recompiles and graph capture are dynamo's, whatever the backend, while inductor's C++ code generation
    would cost about 70 CPU-s a cold run (inductor itself is measured by ``python -m benchmarks compile_cpu``)."""
    import torch

    from torch._dynamo.backends.debugging import aot_eager

    graphs, pixels = [], ("3", str(tiny_img_size()), str(tiny_img_size()))

    def counting(gm, example_inputs):  # the batch size of each graph's images (its weights are inputs too)
        shapes = [tuple(str(d) for d in x.shape) for x in example_inputs if isinstance(x, torch.Tensor)]
        graphs.append([shape[0] for shape in shapes if shape[1:] == pixels])
        return aot_eager(gm, example_inputs)

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **k: real_compile(model, backend=counting, **k))
    torch._dynamo.reset()
    try:
        r = evaluate_cli(*args(tiny, data, tmp_path, "--compile", "--batch-size", "10"))
    finally:
        torch._dynamo.reset()
    assert r.returncode == 3, r.stderr[-3000:]
    # every model (the original too) compiled once, for batches of 10 only: the short batch was padded, not recompiled
    assert len(graphs) == 2 and all(shapes == ["10"] for shapes in graphs), graphs
    # issue 26.2: the compilation happens before the pass, its cost shown before the first batch
    cost = re.search(r"torch\.compile: (\d+\.\d) s before the pass \(every model, batches of 10", r.stderr)
    assert cost and float(cost.group(1)) > 0, r.stderr[-3000:]
    rep = report(tmp_path)
    assert rep["compile"] is True and rep["num_samples"] == 24
    assert rep["max_abs_logit_diff"] <= 1e-5 and rep["agreement"] == 1.0  # compiled alike
    # the padding's outputs are dropped: the very predictions of the eager run in batches of 8
    assert read_csv(tmp_path / "predictions.csv") == read_csv(jpeg_run / "predictions.csv")


def test_torchrun_two_processes_without_device_flags_are_one_job(tiny, data, jpeg_run, tmp_path):
    """On CPUs Lightning's devices "auto" is 1, which contradicts 2 processes: the allocation decides instead
    (flags that agree with it, or contradict it, are checked in process: test_cluster.py)."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "evaluate",  # --standalone: a free port
           *map(str, args(tiny, data, tmp_path))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    # 24 images: not made (3) on both ranks; torchrun itself exits 1 when any child exits non-zero, and names
    # whichever rank it saw exit first
    assert r.returncode == 1 and re.search(r"\(exitcode: 3\) local_rank: [01]", r.stderr), r.stderr[-3000:]
    assert "GATE: NOT MADE" in r.stdout and "exitcode: 1" not in r.stderr
    rep = report(tmp_path)
    assert (rep["world_size"], rep["devices"], rep["num_samples"]) == (2, 2, 24)
    assert rep["cluster_environment"] == "TorchElasticEnvironment"
    assert read_csv(jpeg_run / "predictions.csv") == read_csv(tmp_path / "predictions.csv")


def test_slurm_environment_is_detected(tiny, data, tmp_path):
    env = {**os.environ, "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "cvt-eval",
           "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1"}
    r = evaluate_cli(*args(tiny, data, tmp_path, "--verbose"), env=env)
    assert r.returncode == 3, r.stderr[-3000:]
    assert report(tmp_path)["world_size"] == 1 and report(tmp_path)["cluster_environment"] == "SLURMEnvironment"


def test_reference_runs_in_float32_inside_autocast(tiny):
    import torch

    from evaluate.models.folders import Candidate
    from evaluate.validation.lightning_module import EvalModule
    from evaluate.pixels.preprocess import Normalization

    ref = tiny["reference"]
    converted = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1000))
    module = EvalModule([Candidate("original", "reference", ref, "release"),
                         Candidate("converted", "auto", converted, "release")],
                        {"release": Normalization((0.5,) * 3, (0.5,) * 3)}, 1000, reference="original")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fp32 = ref(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = module.forward_candidate(module.candidates[0], x)
            plain = ref(x).float()  # what autocast would have made of it
    assert torch.equal(inside, fp32)
    assert not torch.equal(plain, fp32)
