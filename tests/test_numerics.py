"""The numerics policy (evaluate.runtime.numerics): IEEE float32 unless --tf32, the reference always IEEE, a float32
head under mixed precision, flags restored after the pass, everything recorded; and the default --num-workers."""

from __future__ import annotations

import json

import pytest
import torch

from evalkit import wnids
from imagegen import make_imagefolder

from cvt_port.reference import OriginalCvT
from evaluate.runtime import numerics
from evaluate.api import evaluate_model
from evaluate.cli import build_parser
from evaluate.models.folders import Logits
from evaluate.plan import MAX_DEFAULT_WORKERS, RunSpec, default_num_workers


@pytest.fixture
def odd_flags():
    """Start from flags no policy sets (cuDNN TF32 off, matmuls 'medium'); put the originals back after."""
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("medium")
    yield {"conv": False, "matmul": "medium"}
    torch.backends.cudnn.allow_tf32 = saved[0]
    torch.set_float32_matmul_precision(saved[1])


def flags_now() -> dict:
    return {"conv": torch.backends.cudnn.allow_tf32, "matmul": torch.get_float32_matmul_precision()}


def test_float32_mode_sets_the_flags_and_restores_them_even_on_error(odd_flags):
    with numerics.float32_mode(True):
        assert numerics.current_flags() == {"conv": "tf32", "matmul": "tf32"}
        with numerics.float32_mode(False):
            assert numerics.current_flags() == {"conv": "ieee", "matmul": "ieee"}
            assert torch.get_float32_matmul_precision() == "highest"
        assert numerics.current_flags() == {"conv": "tf32", "matmul": "tf32"}
    assert flags_now() == odd_flags
    with pytest.raises(ZeroDivisionError), numerics.float32_mode(True):
        1 / 0
    assert flags_now() == odd_flags


# ------------------------------------------------------------------------------ the policy in a pass

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "val"
    make_imagefolder(root, wnids(4, step=53), per_class=3)
    return root


@pytest.fixture
def seen(monkeypatch):
    """What each model's forward saw: the flags and, for the converted model, its logits' dtype."""
    log = {"converted": [], "original": []}
    hf_forward, ref_forward = Logits.forward, OriginalCvT.forward

    def converted(self, pixel_values):
        logits = self.model(pixel_values=pixel_values).logits
        log["converted"].append((numerics.current_flags(), logits.dtype, torch.is_autocast_enabled("cpu")))
        return hf_forward(self, pixel_values)

    def original(self, x):
        log["original"].append((numerics.current_flags(), x.dtype, torch.is_autocast_enabled("cpu")))
        return ref_forward(self, x)

    monkeypatch.setattr(Logits, "forward", converted)
    monkeypatch.setattr(OriginalCvT, "forward", original)
    return log


def run(tiny, data, **kw):
    return evaluate_model(model=tiny["hf"], config=tiny["yaml"], data=data, reference=tiny["pth"], accelerator="cpu",
                          devices=1, num_workers=0, batch_size=4, **kw)


def test_tf32_for_the_converted_model_only_ieee_for_the_original_flags_restored_after(
        tiny, data, seen, odd_flags, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1")
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    result = run(tiny, data, tf32=True, output=tmp_path / "out", summary=True)
    assert flags_now() == odd_flags  # the API leaves the global flags as it found them
    assert len(seen["converted"]) == 3 and len(seen["original"]) == 3  # 12 images, batches of 4
    assert {str(f) for f, _, _ in seen["converted"]} == {str({"conv": "tf32", "matmul": "tf32"})}
    assert {str(f) for f, _, _ in seen["original"]} == {str({"conv": "ieee", "matmul": "ieee"})}
    record = json.loads((tmp_path / "out" / "report.json").read_text())
    assert record == result.record
    overrides = {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1", "NVIDIA_TF32_OVERRIDE": "0"}
    assert record["numerics"] == {"float32": "tf32", "reference": "ieee", "autocast": None, "float32_head": [],
                                  "env_overrides": overrides}
    hw = record["hardware"]
    assert (hw["cuda"], hw["cudnn"], hw["nccl"], hw["sdpa_backend"]) == (None, None, None, None)  # CPU, einsum
    assert isinstance(hw["device"], str) and hw["device"]
    assert record["precision"] == "32-true" and record["top1"] == result.top1  # the existing keys stay
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE" in warnings[0] and "NVIDIA_TF32_OVERRIDE=0" in warnings[1]


def test_default_is_ieee_float32_and_bf16_mixed_logits_leave_the_head_in_float32(tiny, data, seen, odd_flags,
                                                                                    monkeypatch):
    for key in numerics.ENV_OVERRIDES:
        monkeypatch.delenv(key, raising=False)
    result = run(tiny, data, precision="bf16-mixed", attention="sdpa", output=None)
    assert flags_now() == odd_flags
    ieee = str({"conv": "ieee", "matmul": "ieee"})
    assert {str(f) for f, _, _ in seen["converted"]} == {ieee} and {str(f) for f, _, _ in seen["original"]} == {ieee}
    # the converted model runs under bf16 autocast, yet its logits come out of the classifier in float32
    assert {(dtype, autocast) for _, dtype, autocast in seen["converted"]} == {(torch.float32, True)}
    assert {(dtype, autocast) for _, dtype, autocast in seen["original"]} == {(torch.float32, False)}
    n = result.record["numerics"]
    assert (n["float32"], n["autocast"], n["float32_head"]) == ("ieee", "bfloat16", ["converted"])
    assert n["env_overrides"] == {}
    expected = numerics.sdpa_backend(torch.device("cpu"), torch.bfloat16, head_dim=16, heads=1, q_len=56 * 56,
                                     kv_len=28 * 28, scale=16 ** -0.5)
    assert result.record["hardware"]["sdpa_backend"] == expected and expected is not None


# --------------------------------------------------------------------------- the float32 head alone

def test_float32_head_gives_float32_logits_equal_to_the_head_in_float32(tiny):
    from transformers import CvtForImageClassification

    model = CvtForImageClassification.from_pretrained(tiny["hf"]).eval()
    x = torch.randn(3, 3, 56, 56)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(pixel_values=x).logits
        assert bf16.dtype == torch.bfloat16  # what the pass got before the policy
        cls = model.cvt(pixel_values=x).cls_token_value
        assert numerics.float32_head(Logits(model)) is True
        logits = Logits(model)(x)
    assert logits.dtype == torch.float32
    with torch.no_grad():  # the same head, by hand, in float32 on the same backbone output
        ln, fc = model.layernorm.inner, model.classifier.inner
        expected = torch.nn.functional.linear(torch.nn.functional.layer_norm(
            cls.float(), ln.normalized_shape, ln.weight, ln.bias, ln.eps), fc.weight, fc.bias).squeeze(1)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert numerics.float32_head(Logits(model)) is True and isinstance(model.classifier.inner, torch.nn.Linear)


def test_float32_head_takes_bf16_inputs_too():
    head = numerics.Float32Head(torch.nn.Linear(8, 3))
    x = torch.randn(2, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, head.inner(x.float()), rtol=0, atol=0)


def test_override_warnings_name_what_defeats_the_policy():
    assert numerics.override_warnings({}, tf32=True) == []
    assert numerics.override_warnings({"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "0"}, tf32=False) == []
    assert numerics.override_warnings({"NVIDIA_TF32_OVERRIDE": "0"}, tf32=False) == []  # IEEE wanted anyway
    [line] = numerics.override_warnings({"NVIDIA_TF32_OVERRIDE": "0"}, tf32=True)
    assert "NVIDIA_TF32_OVERRIDE=0" in line
    [line] = numerics.override_warnings({"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}, tf32=False)
    assert "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE" in line and "\n" not in line
    assert numerics.env_overrides({"NVIDIA_TF32_OVERRIDE": "1", "PATH": "/bin"}) == {"NVIDIA_TF32_OVERRIDE": "1"}


# --------------------------------------------------------------------------------- --num-workers

@pytest.mark.parametrize("cpus, env, expected", [
    (16, {}, MAX_DEFAULT_WORKERS),  # capped
    (6, {}, 6),  # what the affinity allows, not the machine's count
    (16, {"LOCAL_WORLD_SIZE": "4"}, 4),  # torchrun: 4 processes share the affinity
    (16, {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, 2),  # one process per visible GPU
    (64, {"SLURM_CPUS_PER_TASK": "3", "CUDA_VISIBLE_DEVICES": "0,1"}, 3),  # SLURM: the task's own CPUs
    (2, {"SLURM_CPUS_PER_TASK": "32"}, 2),  # never more than the affinity
    (1, {}, 1),
    (3, {"LOCAL_WORLD_SIZE": "8"}, 1),  # at least one worker
    (16, {"SLURM_CPUS_PER_TASK": "junk", "LOCAL_WORLD_SIZE": "0"}, 8),  # unusable values are ignored
])
def test_default_num_workers_from_the_cpus_this_process_may_use(monkeypatch, cpus, env, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 1024)
    for key in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert default_num_workers() == expected
    assert RunSpec().num_workers == expected  # the plan's default
    assert build_parser().parse_args([]).num_workers == expected  # the CLI's default
    assert build_parser().parse_args(["--tf32"]).tf32 is True and build_parser().parse_args([]).tf32 is False
