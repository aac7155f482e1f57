"""The numerics policy of a pass: which float32 arithmetic each model gets, applied and recorded.

Why: on Ampere and later GPUs torch runs cuDNN convolutions in TF32 by default (every CvT convolution,
the depthwise q/k/v projections included), and containers can force TF32 matmuls too
(``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``). TF32 keeps 10 mantissa bits: near-ties flip, and the promise
that the original runs in float32 as released would silently not hold. So the policy is explicit:

- float32 passes use IEEE float32 convolutions and matmuls unless the user asks for TF32 (``tf32``);
- the reference model (the ground truth) always runs in IEEE float32, also under ``tf32``: the flags
  are switched around its forward (:func:`float32_mode`; cuBLAS and cuDNN read them at each call);
- under ``bf16-mixed``/``16-mixed`` the Hugging Face model's final layer norm and classifier run in
  float32 outside autocast (:func:`float32_head`), so the logits the gate ranks are float32, not
  bf16 values cast afterwards;
- the flags are set for the pass only and restored afterwards (the API leaves no global state changed);
- environment variables that override the flags are detected, recorded in report.json, and warned
  about in one line (not refused: a site or container sets them deliberately, often where the user
  cannot unset them; the run stays auditable because report.json says what arithmetic it had).

The legacy flags (``torch.backends.cudnn.allow_tf32``, ``torch.set_float32_matmul_precision``) are used:
torch 2.13's per-backend ``fp32_precision`` API makes the legacy getters raise once it is used, and
Lightning and user code still read them.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Iterator, Mapping

import torch
from torch import nn

# Environment variables that change TF32 behind the flags' back
ENV_OVERRIDES = ("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE")


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The TF32 override variables set in the environment, as found."""
    env = os.environ if environ is None else environ
    return {k: env[k] for k in ENV_OVERRIDES if k in env}


def override_warnings(overrides: Mapping[str, str], tf32: bool) -> list[str]:
    """One line per override that defeats the policy of this run."""
    lines = []
    if overrides.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "0").strip() not in ("", "0"):
        lines.append("warning: TORCH_ALLOW_TF32_CUBLAS_OVERRIDE is set: matmuls run in TF32 on the GPU, the original's "
                     "too (recorded in report.json); unset it for IEEE float32")
    if tf32 and overrides.get("NVIDIA_TF32_OVERRIDE", "").strip() == "0":
        lines.append("warning: NVIDIA_TF32_OVERRIDE=0 disables the TF32 this run asks for (recorded in report.json)")
    return lines


def current_flags() -> dict[str, str]:
    """The float32 arithmetic torch's flags ask for now: ``ieee`` or ``tf32`` per kind of operation."""
    conv = "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    matmul = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return {"conv": conv, "matmul": matmul}


@contextlib.contextmanager
def float32_mode(tf32: bool) -> Iterator[None]:
    """cuDNN convolutions and float32 matmuls in TF32 (``tf32``) or IEEE float32, restored on exit."""
    saved_conv, saved_matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved_conv
        torch.set_float32_matmul_precision(saved_matmul)


class Float32Head(nn.Module):
    """A head module run outside autocast on float32 inputs: its output is float32 whatever the pass's
    autocast dtype (its parameters stay float32 under mixed precision)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.inner(x.float())


HEAD_NAMES = ("layernorm", "classifier")  # CvtForImageClassification's (and many HF classifiers') head


def float32_head(module: nn.Module) -> bool:
    """Wrap the final layer norm and classifier of a Hugging Face classifier (``module.model`` for the
    :class:`evaluate.models.folders.Logits` adapter) in :class:`Float32Head`; True when a classifier was found."""
    hf = getattr(module, "model", module)
    found = False
    for name in HEAD_NAMES:
        head = getattr(hf, name, None)
        if isinstance(head, nn.Module) and not isinstance(head, (Float32Head, nn.Identity)):
            setattr(hf, name, Float32Head(head))
            found = found or name == "classifier"
    return found or isinstance(getattr(hf, "classifier", None), Float32Head)


def sdpa_backend(device: torch.device, dtype: torch.dtype, head_dim: int = 64, heads: int = 1,
                 q_len: int = 3136, kv_len: int = 784, scale: float | None = None) -> str | None:
    """The kernel ``scaled_dot_product_attention`` picks for CvT's first-stage shapes (q over every
    token, k/v over the stride-2 grid, an explicit scale) on ``device`` in ``dtype``: what torch's own
    dispatcher (``torch._fused_sdp_choice``) answers. None when torch cannot say."""
    try:
        q = torch.empty((1, heads, q_len, head_dim), device=device, dtype=dtype)
        kv = torch.empty((1, heads, kv_len, head_dim), device=device, dtype=dtype)
        choice = torch._fused_sdp_choice(q, kv, kv, None, 0.0, False, scale=scale)
        from torch.nn.attention import SDPBackend

        return next(b.name.lower() for b in SDPBackend.__members__.values() if int(b.value) == int(choice))
    except Exception:  # noqa: BLE001 - a private dispatcher call: a fact we may lack, never a failure
        return None


def hardware_facts(device: torch.device) -> dict:
    """The device and the library versions that decide the arithmetic; CUDA fields are None on CPU."""
    if device.type == "cuda" and torch.cuda.is_available():
        try:
            nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception:  # noqa: BLE001 - torch built without NCCL
            nccl = None
        return {"device": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(), "nccl": nccl}
    return {"device": _cpu_name(), "cuda": None, "cudnn": None, "nccl": None}


def _cpu_name() -> str | None:
    """The CPU's model name (/proc/cpuinfo on Linux), else ``platform.processor()`` or the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision string (None: no autocast)."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))


def policy_record(tf32: bool, precision: str, float32_heads: list[str], overrides: Mapping[str, str]) -> dict:
    """What report.json says about the arithmetic of the run."""
    return {
        "float32": "tf32" if tf32 else "ieee",  # convolutions and matmuls of the candidates in float32
        "reference": "ieee",  # always, also under tf32
        "autocast": str(autocast_dtype(precision)).replace("torch.", "") if autocast_dtype(precision) else None,
        "float32_head": float32_heads,  # rows whose layer norm + classifier run in float32 outside autocast
        "env_overrides": dict(overrides),
    }
