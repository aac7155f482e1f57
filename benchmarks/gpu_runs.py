"""The runs of one cell of the GPU check (:mod:`benchmarks.gpu`): its model's preparation, the bare forward, a
pass through the product's run path, and the counter of host-device synchronisations they report.

Every function takes plain arguments (the check's sizes are decided in :mod:`benchmarks.gpu`); the timing of
the bare forward is the benchmarks' one bare loop, :func:`benchmarks.timing.time_loop`.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
import warnings
from pathlib import Path

from .timing import time_loop

STEP_FRAMES = ("_evaluation_step",)  # Lightning's evaluation step: batch transfer + validation_step
SYNC_MESSAGE = "synchroniz"  # "called a synchronizing CUDA operation"


class SyncCounter:
    """Counts CUDA host-device synchronisations (torch's sync debug mode, "warn") while active; with ``within``,
    only those raised under a frame of one of these function names. Nothing is counted off CUDA (None)."""

    def __init__(self, cuda: bool, within: tuple[str, ...] | None = None):
        self.cuda, self.within, self.count = cuda, within, (0 if cuda else None)

    def _show(self, message, category, filename, lineno, file=None, line=None):
        if SYNC_MESSAGE not in str(message):
            return self._saved(message, category, filename, lineno, file, line)
        if self.within is None or self._inside():
            self.count += 1

    def _inside(self) -> bool:
        f = sys._getframe(1)
        while f is not None:
            if f.f_code.co_name in self.within:
                return True
            f = f.f_back
        return False

    def __enter__(self):
        if self.cuda:
            import torch

            self._catch = warnings.catch_warnings()
            self._catch.__enter__()
            warnings.filterwarnings("always", message=f".*{SYNC_MESSAGE}.*")
            self._saved, warnings.showwarning = warnings.showwarning, self._show
            self._mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            torch.cuda.set_sync_debug_mode(self._mode)
            self._catch.__exit__(*exc)
        return False


def sync_selftest(cuda: bool):
    """Whether the sync counter sees a synchronisation on this torch: one ``.item()`` must count 1 (None off
    CUDA). A counter that sees none would report 0 synchronisations per step, which would look like a result."""
    if not cuda:
        return None
    import torch

    x = torch.ones(2, device="cuda")
    with SyncCounter(True) as c:
        x.sum().item()
    return c.count


def _reset_peak(cuda: bool) -> None:
    import torch

    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(cuda: bool):
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None


def bare_forward(model_dir: Path, img_size: int, batch: int, *, device: str, warmup_batches: int,
                 timed_batches: int, precision: str = "32-true", attention: str = "einsum", compile: bool = False,
                 tf32: bool = False) -> dict:
    """Images/s of ``model(pixel_values)``: ``warmup_batches`` untimed batches, then one timed pass of
    ``timed_batches`` batches of ``batch`` (synchronised at the end); peak memory and synchronisations with it."""
    cuda = device == "cuda"
    _reset_peak(cuda)
    syncs = SyncCounter(cuda)
    res = time_loop(str(model_dir), img_size, timed_batches * batch, [batch], passes=1, warmup_batches=warmup_batches,
                    attention=attention, precision=precision, compile=compile, device=device, tf32=tf32,
                    timed=lambda: syncs)
    rec = res["batch_sizes"][str(batch)]
    return {"images_per_second": rec["pass_ips"][0], "timed_s": rec["pass_s"][0], "warmup_s": rec["warmup_s"],
            "batches": timed_batches, "batch_size": batch, "peak_mib": _peak_mib(cuda),
            "syncs_per_step": None if syncs.count is None else syncs.count / timed_batches}


def harness(m: dict, *, device: str, num_workers: int, flags: dict, cache: bool, reference: bool) -> dict:
    """One pass through the product's run path (``run_plan``, nothing written) on prepared model ``m``
    (:func:`prepare`), from its JPEGs or its cache, with or without its original as reference: report.json's
    figures, the pass's peak memory and synchronisations per step (those inside Lightning's evaluation step)."""
    from evaluate.api import DataSpec, EvalPlan, ModelSpec, ReportSpec, RunSpec, run_plan

    cuda = device == "cuda"
    plan = EvalPlan(
        models=ModelSpec(model=str(m["hf"]), config=m["config"], reference=m["pth"] if reference else None),
        data=DataSpec(source=str(m["photos"])),
        run=RunSpec(batch_size=m["batch"], num_workers=num_workers, accelerator="gpu" if cuda else "cpu",
                    devices=1, cache_dir=m["cache"] if cache else None, **flags),
        report=ReportSpec(output=None, summary=False))
    _reset_peak(cuda)
    with SyncCounter(cuda, within=STEP_FRAMES) as syncs, contextlib.redirect_stdout(sys.stderr):
        result = run_plan(plan)  # the progress bar goes to stderr: stdout keeps the table
    rec = result.record
    steps = math.ceil(rec["num_samples"] / m["batch"])
    out = {"images_per_second": rec["images_per_second"], "num_samples": rec["num_samples"], "steps": steps,
           "pass_seconds": rec.get("pass_seconds"), "gate": rec["gate"], "peak_mib": _peak_mib(cuda),
           "syncs": syncs.count, "syncs_per_step": None if syncs.count is None else syncs.count / steps,
           "numerics": rec.get("numerics"), "sdpa_backend": (rec.get("hardware") or {}).get("sdpa_backend"),
           "distinct_top1": len({p.top1(result.primary) for p in result.predictions})}
    if reference:
        out.update(max_abs_logit_diff=rec["max_abs_logit_diff"], agreement=rec["agreement"],
                   reference_distinct_top1=len({p.top1(result.reference) for p in result.predictions}))
    del result
    return out


def prepare(root: Path, label: str, config: str, *, images: int, batch: int, photo_size: tuple[int, int],
            device: str, num_workers: int) -> dict:
    """In ``root``: random weights in the release format whose predictions the image decides
    (:mod:`benchmarks.synthetic.checkpoints`, the head probed on ``device``), their conversion, ``images`` generated photos
    of ``photo_size`` (:mod:`benchmarks.synthetic.photos`) and their cache."""
    import cvt_port
    from cvt_port.variants import get_variant
    from evaluate.api import DataSpec, EvalPlan, ModelSpec, ReportSpec, RunSpec, build_cache
    from benchmarks.synthetic.checkpoints import random_reference, save_state, spread_head_
    from benchmarks.synthetic.photos import write_imagenet_val

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    variant = get_variant(config)
    pth = root / (variant.release_file if variant.release_file else f"{label}.pth")
    model = random_reference(variant, seed=0, image_dependent=True)
    probe = spread_head_(model, variant, device=device)
    save_state(model, pth)
    del model
    gc.collect()
    hf = cvt_port.convert(pth, root / "hf", variant=config, overwrite=True, log=lambda msg: None)
    photos = write_imagenet_val(root / "photos", images, photo_size)
    plan = EvalPlan(models=ModelSpec(model=str(hf), config=config), data=DataSpec(source=str(photos)),
                    run=RunSpec(batch_size=batch, num_workers=num_workers, accelerator="cpu"),
                    report=ReportSpec(output=None, summary=False))
    with contextlib.redirect_stdout(sys.stderr):
        cache = build_cache(plan, root / "cache")
    return {"label": label, "config": config, "pth": pth, "hf": hf, "photos": photos, "cache": cache,
            "img_size": variant.preprocessing.img_size, "batch": batch, "images": images,
            "checkpoint_mib": round(pth.stat().st_size / 2**20, 1), **probe,
            "setup_s": round(time.perf_counter() - t0, 2)}
