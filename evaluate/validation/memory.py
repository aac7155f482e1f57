"""Device memory: an out-of-memory error is bad input naming the batch size to use, ``batch_size="auto"`` finds
the largest power-of-two batch that fits, and the reference can run in chunks.

Why: an evaluation holds every candidate's weights on the device at once but runs the candidates one after
the other, so its peak is the weights plus the largest single model's activations for one batch (in
inference mode nothing is kept for a backward pass). The activations grow linearly with the batch and,
with einsum attention, quadratically with the token count: W24 at 384 with a batch of 64 needs about
47 GiB for the converted model and 32 GiB for the original in float32 (docs/evaluate.md, "Memory"). A batch that
does not fit is a setting, not a bug: every rank reports the same one line (exit 2) through the fault
exchange of :mod:`evaluate.validation.lightning_module`.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch

from cvt_port.errors import BadInput

MAX_AUTO_BATCH = 512  # the search stops here: past it the throughput no longer grows
CPU_AUTO_BATCH = 64  # on the CPU, "auto" is the default batch (host memory is large and a probe would be slow)

_CPU_OOM = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA, and what other backends raise as it), or the CPU allocator's RuntimeError."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (any(s in text for s in _CPU_OOM) or "out of memory" in text.lower())


class OutOfMemory(BadInput):
    """The pass ran out of device memory: a batch size to change (exit 2, one line)."""


def out_of_memory(exc: BaseException, batch: int | None, device: object = None) -> BaseException:
    """``exc`` as :class:`OutOfMemory` naming a batch size that has a chance to fit, if it is an
    out-of-memory error; any other exception unchanged."""
    if not is_out_of_memory(exc):
        return exc
    where = f" on {device}" if device is not None else ""
    if batch is not None and batch > 1:
        return OutOfMemory(f"out of memory{where} with a batch of {batch} images per device: use run.batch_size "
                           f"{max(1, batch // 2)} or smaller (or run.batch_size auto to find the largest that fits)")
    return OutOfMemory(f"out of memory{where} with a batch of one image: the models alone do not fit this device; "
                       "use a device with more memory")


def largest_batch(fits: Callable[[int], bool], limit: int = MAX_AUTO_BATCH) -> int:
    """The largest power of two up to ``limit`` for which ``fits(batch)`` holds (doubling from 1)."""
    if not fits(1):
        raise OutOfMemory("out of memory with a batch of one image: the models alone do not fit this device; "
                          "use a device with more memory")
    batch = 1
    while batch * 2 <= limit and fits(batch * 2):
        batch *= 2
    return batch


def forward_fits(models: Iterable[tuple[torch.nn.Module, tuple[int, ...], bool]], device: torch.device,
                 autocast: torch.dtype | None) -> Callable[[int], bool]:
    """``fits(batch)``: every model, in turn, runs a synthetic batch of its input shape on ``device`` without
    running out of memory. Each entry is (module, input shape, whether it runs outside autocast in float32)."""
    models = list(models)

    def fits(batch: int) -> bool:
        try:
            with torch.inference_mode():
                for module, shape, float32 in models:
                    x = torch.zeros((batch, *shape), device=device)
                    mixed = autocast is not None and not float32
                    with torch.autocast(device.type, dtype=autocast) if mixed else contextlib.nullcontext():
                        module(x)
                    del x
            return True
        except Exception as exc:  # noqa: BLE001 - only an out-of-memory error means "does not fit"
            if not is_out_of_memory(exc):
                raise
            return False
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return fits


def auto_batch(candidates, shapes: dict[str, tuple[int, ...]], device: torch.device, autocast: torch.dtype | None,
               limit: int = MAX_AUTO_BATCH, probe_cpu: bool = False) -> tuple[int, int | None]:
    """``(batch_size, reference_chunk)`` for ``batch_size="auto"``: the largest power-of-two batch the candidates
    other than the reference run on ``device`` (probed with synthetic inputs before the pass; models are moved
    to the device), and the largest chunk of it the reference runs in (None: the whole batch), so the reference
    never needs more memory than the converted model. On the CPU the default batch (a probe there would be slow
    and host memory is rarely the limit) unless ``probe_cpu``."""
    if device.type == "cpu" and not probe_cpu:
        return CPU_AUTO_BATCH, None
    entries = []
    for c in candidates:
        module = getattr(c.module, "_orig_mod", c.module).to(device)  # a compiled model: probe its eager module
        entries.append((c.kind == "reference", module, shapes[c.preprocessing]))
    others = [(m, s, False) for ref, m, s in entries if not ref]
    batch = largest_batch(forward_fits(others or [(m, s, True) for _, m, s in entries], device, autocast), limit)
    refs = [(m, s, True) for ref, m, s in entries if ref]
    if not refs or not others:
        return batch, None
    chunk = largest_batch(forward_fits(refs, device, autocast), batch)
    return batch, (chunk if chunk < batch else None)


def chunked(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``model(x)`` computed ``chunk`` images at a time (the whole batch when ``chunk`` is None): in eval mode each
    image's output depends on that image alone, so the result is the same."""
    if not chunk or len(x) <= chunk:
        return model(x)
    return torch.cat([model(part) for part in x.split(chunk)])
