"""Memory: running out of it is one line and exit 2 naming a batch size to use; ``--batch-size auto`` finds the
largest power-of-two batch that fits; the original can run in chunks with the same results.

A device's limit is simulated on the CPU: the models raise the errors torch raises (``torch.OutOfMemoryError``,
the CPU allocator's ``RuntimeError``) for batches above a threshold, and compute as usual below it.
"""

from __future__ import annotations

import functools

import pytest
import torch

import cvt_port
from cvt_port.errors import BadInput, ExitStatus
from evaluate import cli
from evaluate.validation import memory
from evaluate.api import evaluate_model
from evaluate.default import CHECKPOINT, DATA, VARIANT
from evaluate.validation.memory import OutOfMemory, auto_batch, chunked, is_out_of_memory, largest_batch, out_of_memory
from evaluate.models.folders import Candidate
from evaluate.plan import ModelKind

CPU = dict(accelerator="cpu", num_workers=0, devices=1)
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 39.38 GiB"
CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to " \
          "allocate 51380224000 bytes. Error code 12 (Cannot allocate memory)"


def run(digits, **options):
    return evaluate_model(model=digits, data=DATA, config=VARIANT, reference=CHECKPOINT, **{**CPU, **options})


def limit_memory(monkeypatch, converted: int, original: int, error=lambda: torch.OutOfMemoryError(CUDA_OOM)):
    """Every forward pass of more images than the model's limit raises ``error()`` (the original: the reference
    implementation's class; converted and stock: the Hugging Face class); ``seen`` records the batch sizes each
    kind of model was asked to run."""
    from transformers import CvtForImageClassification

    seen = {"converted": [], "original": []}

    def limited(cls, kind, limit):
        forward = cls.forward

        def run(self, *args, **kwargs):
            n = len(args[0] if args else kwargs["pixel_values"])
            seen[kind].append(n)
            if n > limit:
                raise error()
            return forward(self, *args, **kwargs)
        monkeypatch.setattr(cls, "forward", run)

    limited(cvt_port.reference.OriginalCvT, "original", original)
    limited(CvtForImageClassification, "converted", converted)
    return seen


# --------------------------------------------------------------------------- out of memory during the pass


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError(CUDA_OOM)) and is_out_of_memory(RuntimeError(CPU_OOM))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    other = ValueError("x")
    assert out_of_memory(other, 64) is other
    assert "use run.batch_size 32 or smaller" in str(out_of_memory(torch.OutOfMemoryError(CUDA_OOM), 64, "cuda:0"))


@pytest.mark.parametrize("error", [lambda: torch.OutOfMemoryError(CUDA_OOM), lambda: RuntimeError(CPU_OOM)],
                         ids=["cuda", "cpu"])
def test_out_of_memory_in_the_pass_is_bad_input_naming_a_smaller_batch(digits, monkeypatch, error):
    limit_memory(monkeypatch, converted=16, original=16, error=error)
    with pytest.raises(BadInput) as err:  # the same on every rank (the fault exchange): exit status 2
        run(digits, batch_size=64)
    assert str(err.value) == ("out of memory on cpu with a batch of 64 images per device: use run.batch_size 32 or "
                              "smaller (or run.batch_size auto to find the largest that fits)")


def test_out_of_memory_on_the_command_line_is_one_line_exit_2(digits, monkeypatch, tmp_path, capsys):
    limit_memory(monkeypatch, converted=8, original=8)
    status = cli.main(["--model", str(digits), "--config", VARIANT, "--data", str(DATA), "--reference", str(CHECKPOINT),
                       "--accelerator", "cpu", "--num-workers", "0", "--batch-size", "16", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == ExitStatus.BAD_INPUT
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        "error: out of memory on cpu with a batch of 16 images per device: use --batch-size 8 or smaller "
        "(or --batch-size auto to find the largest that fits)"]
    assert "Traceback" not in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- --batch-size auto


def test_largest_batch_is_the_largest_power_of_two_that_fits():
    asked = []
    fits = lambda b: asked.append(b) or b <= 100  # noqa: E731
    assert largest_batch(fits) == 64 and asked == [1, 2, 4, 8, 16, 32, 64, 128]
    assert largest_batch(lambda b: True, limit=512) == 512
    with pytest.raises(OutOfMemory, match="batch of one image"):
        largest_batch(lambda b: False)


class Limited(torch.nn.Module):
    """A real model that runs out of memory above ``limit`` images, as a device would."""

    def __init__(self, model: torch.nn.Module, limit: int):
        super().__init__()
        self.model, self.limit = model, limit

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(CUDA_OOM)
        return self.model(x)


def test_auto_batch_probes_each_model_and_chunks_the_original(digits):
    reference = cvt_port.reference.OriginalCvT(cvt_port.variants.get_variant(VARIANT).architecture).eval()
    converted = cvt_port.load_model(digits)
    candidates = [Candidate("original", ModelKind.REFERENCE, Limited(reference, 20), "release"),
                  Candidate("converted", ModelKind.EXACT, Limited(converted, 40), "release")]
    shapes = {"release": (3, 32, 32)}
    assert auto_batch(candidates, shapes, torch.device("cpu"), None, probe_cpu=True) == (32, 16)
    assert auto_batch(candidates[1:], shapes, torch.device("cpu"), None, probe_cpu=True) == (32, None)
    assert auto_batch(candidates, shapes, torch.device("cpu"), None) == (memory.CPU_AUTO_BATCH, None)  # CPU: default


def test_batch_size_auto_runs_the_pass_with_the_batch_that_fits(digits, monkeypatch):
    seen = limit_memory(monkeypatch, converted=100, original=20)
    # on a device the probe would run these models; on the CPU it is forced here with the same simulated limits
    monkeypatch.setattr(memory, "forward_fits", functools.partial(_limited_fits, limits={True: 20, False: 100}))
    monkeypatch.setattr("evaluate.validation.memory.auto_batch", functools.partial(auto_batch, probe_cpu=True))
    auto = run(digits, batch_size="auto")
    assert max(seen["converted"]) == 64 and max(seen["original"]) == 16  # 64 fits the converted, 16 the original
    monkeypatch.undo()  # no limit: the whole batch at once
    fixed = run(digits, batch_size=64)
    assert auto.predictions == fixed.predictions and auto.top1 == fixed.top1


def _limited_fits(models, device, autocast, limits):
    models = list(models)
    return lambda b: all(b <= limits[float32] for _, _, float32 in models)


# --------------------------------------------------------------------------- the original in chunks


def test_chunked_reference_gives_the_same_logits():
    reference = cvt_port.reference.OriginalCvT(cvt_port.variants.get_variant(VARIANT).architecture).eval()
    reference.load_state_dict(torch.load(CHECKPOINT, weights_only=True))
    x = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sizes = []
    with torch.inference_mode():
        whole, parts = reference(x), chunked(lambda part: sizes.append(len(part)) or reference(part), x, 3)
    assert sizes == [3, 3, 3, 1] and whole.shape == parts.shape == (10, 10) and whole.std() > 0.5
    assert torch.allclose(whole, parts, rtol=0, atol=1e-5)


def test_reference_chunk_gives_the_same_results_in_less_memory(digits, monkeypatch):
    seen = limit_memory(monkeypatch, converted=64, original=8)
    chunked_run = run(digits, batch_size=64, reference_chunk=8)
    assert set(seen["original"]) == {8} and max(seen["converted"]) == 64
    monkeypatch.undo()
    plain = run(digits, batch_size=64)
    assert chunked_run.predictions == plain.predictions
    assert chunked_run.record["models"] == plain.record["models"]


def test_out_of_memory_on_one_rank_ends_every_rank_with_the_same_line(digits, tmp_path):
    """torchrun, 2 CPU processes: only rank 1 runs out of memory; both exit 2 with the same one line."""
    import os
    import subprocess
    import sys

    script = tmp_path / "oom_on_rank1.py"
    script.write_text(f"""
import os, sys, torch
from transformers import CvtForImageClassification
forward = CvtForImageClassification.forward
def limited(self, *args, **kwargs):
    if os.environ["RANK"] == "1":
        raise torch.OutOfMemoryError({CUDA_OOM!r})
    return forward(self, *args, **kwargs)
CvtForImageClassification.forward = limited
from evaluate.cli import main
sys.exit(main(sys.argv[1:]))
""")
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # torchrun with this interpreter (and this checkout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run([*torchrun, "--standalone", "--nproc_per_node", "2", "--log-dir", str(tmp_path / "logs"), "--tee", "3",
                        str(script), "--model", str(digits), "--config", VARIANT, "--data", str(DATA),
                        "--reference", str(CHECKPOINT), "--accelerator", "cpu", "--num-workers", "0", "--batch-size", "16",
                        "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if "error: out of memory" in line]
    assert len(lines) == 2, r.stderr[-3000:]  # one per rank, the same
    assert all(line.endswith("error: out of memory on cpu with a batch of 16 images per device: use --batch-size 8 "
                             "or smaller (or --batch-size auto to find the largest that fits)") for line in lines)
    assert "exitcode: 2" in r.stderr and "exitcode: 4" not in r.stderr and "exitcode: 1 " not in r.stderr


def test_out_of_memory_while_the_models_go_to_the_device_is_one_line_exit_2(digits, monkeypatch, tmp_path, capsys):
    """Before the first step Lightning moves the models to the device; weights that do not fit are a setting
    (exit 2, one line), not an internal error with a traceback."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    def no_room(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(SingleDeviceStrategy, "model_to_device", no_room)
    status = cli.main(["--model", str(digits), "--config", VARIANT, "--data", str(DATA), "--accelerator", "cpu",
                       "--num-workers", "0", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == ExitStatus.BAD_INPUT, err
    (line,) = [line for line in err.splitlines() if line.startswith("error")]
    assert "out of memory on cpu before the first batch" in line and "--with-stock" in line
    assert "Traceback" not in err and not (tmp_path / "o").exists()
