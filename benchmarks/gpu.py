"""The prepared GPU check (issue 12, point 5): ``python -m benchmarks gpu``, one table in at most 5 minutes.

For CvT-13 (``cvt-13-224``, batch 64) and CvT-W24 (``cvt-w24-384-22k``, batch 32), random weights saved in the
release format and converted by ``cvt_port.convert`` (as every benchmark gets its model), under each setting
(fp32 = IEEE float32, ``tf32``, ``bf16-mixed``, ``sdpa`` attention, ``compile``), one cell measures:

- bare forward images/s: ``model(pixel_values)`` on one pre-made device batch (warm-up batches, then a fixed
  number of timed batches, synchronised at the end), in this process;
- harness images/s from JPEG and from the cache: the real run path, :func:`evaluate.api.run_plan` with
  ``output`` None (Lightning validate, torchmetrics, gate), on generated JPEGs and on a cache of them built
  once per model by :func:`evaluate.api.build_cache`; the figure is report.json's ``images_per_second``
  (after the first batch: warm-up and compilation excluded);
- converted vs reference: a third harness run, from the cache, with ``models.reference`` (the original .pth
  through ``cvt_port/reference.py``, always IEEE float32): report.json's ``max_abs_logit_diff`` and
  ``agreement`` (top-1) under the setting's numerics policy;
- peak GPU memory (``torch.cuda.max_memory_allocated``, reset before each run): bare / harness / harness
  with the reference;
- host-device synchronisations per step: ``torch.cuda.set_sync_debug_mode("warn")`` and the warnings counted
  that come from inside Lightning's evaluation step (the batch's transfer and ``validation_step``), divided by
  the steps; harness / harness with the reference.

Budget (one H200-class GPU, 16 cores; an estimate, not yet measured on a GPU): imports and CUDA start ~15 s;
per model a setup (random weights, the head set on 16 probe images, conversion with its CPU parity probe, 512
or 128 generated 500x375 JPEGs, the cache) of ~10 s (CvT-13) and ~25 s (W24); per eager cell 1 bare loop + 3
harness runs of 2-8 s each (Trainer, model load, 8 DataLoader workers; the passes themselves take about a
second: 512 CvT-13 images, 128 W24 images), ~10 s for CvT-13 and ~20 s for W24, so the eight eager cells and
both setups take ~150 s; a compile cell compiles 4-5 times (bare, JPEG, cache, and the converted and the
reference models of the reference run; inductor's caches make the later ones cheaper), ~60-120 s each. That
is ~270-330 s in all: hence the budget, ``--budget-s`` (default 240 s, counted from the check's start): a run
starts only when the time spent plus its estimate (the model's fp32 run of the same kind, x6 under compile,
at least 60 s for its first compiled run) fits, a cell or run that does not fit is reported as skipped
("budget"), and the command ends within 5 minutes. The order puts what matters most first: both models'
eager cells (fp32, tf32, bf16, sdpa: the numerics policies), then CvT-13's compile cell, then W24's. Every
run's figures are also logged to stderr as it ends, so a check cut short still leaves them.

Smoke mode (``--smoke``/``--tiny``, and always without CUDA): the same code on the CPU with tiny sizes (the
tiny 1000-class CvT of ``configs/testing/tiny-imagenet.yaml`` evaluated at 64x64, 8 photos, batch 4, no
DataLoader workers), fp32/tf32/bf16/sdpa, compile reported as skipped (its compilations take ~1.5 min on 2 CPU
cores; ``--compile`` measures it); peak GPU memory and synchronisations read "-" (the process's peak RSS is in
the notes). The test suite runs it.

On a lent GPU machine (nothing to install where its python3 has torch with CUDA, lightning, transformers,
torchmetrics, safetensors, pillow and pyyaml; run from the repository root)::

    bash benchmarks/gpu_check.sh "$OUT"     # = python3 -m benchmarks gpu --output "$OUT/gpu.json" under a timeout

The table goes to stdout, results (every figure and run record) to ``--output``. ``python -m benchmarks.gpu``
runs it too.
"""

from __future__ import annotations

import contextlib
import gc
import math
import resource
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from .report import row
from .timing import fmt, progress
from .workspace import Workspace

KEY = "6_gpu"
NEEDS: tuple[str, ...] = ()
USES_MODEL = False  # it makes its own models (two variants)
USES_PHOTOS = False  # it writes its own JPEGs (a lent GPU machine has no ../shared)

# (name, RunSpec fields): the numerics policies and speed options, in table order; compile last (the slowest)
SETTINGS = (
    ("fp32", {}),
    ("tf32", {"tf32": True}),
    ("bf16", {"precision": "bf16-mixed"}),
    ("sdpa", {"attention": "sdpa"}),
    ("compile", {"compile": True}),
)
RUNS = ("bare", "jpeg", "cache", "reference")  # the measurements of one cell, in the order they run
STEP_FRAMES = ("_evaluation_step",)  # Lightning's evaluation step: batch transfer + validation_step
SYNC_MESSAGE = "synchroniz"  # "called a synchronizing CUDA operation"


@dataclass
class Sizes:
    """What the check measures on this machine."""

    smoke: bool
    device: str  # "cuda" or "cpu"
    models: list  # [(label, config)]: config a variant name or a YAML path
    images: dict  # label -> images per harness pass
    batch: dict  # label -> batch size
    warmup_batches: int
    timed_batches: int
    num_workers: int
    compile: bool
    budget_s: float | None

    @classmethod
    def make(cls, plan, cuda: bool, plan_dir: Path) -> "Sizes":
        """The GPU sizes, or the smoke sizes (their config written into ``plan_dir``)."""
        from evaluate.plan import default_num_workers

        from cvt_port.variants import TESTING_CONFIGS_DIR

        budget = getattr(plan, "budget_s", None)
        if plan.tiny or not cuda:
            tiny = (TESTING_CONFIGS_DIR / "tiny-imagenet.yaml").read_text()
            if "img_size: 224" not in tiny or "name: tiny-imagenet\n" not in tiny:
                raise RuntimeError(f"{TESTING_CONFIGS_DIR / 'tiny-imagenet.yaml'}: no longer the tiny 224 config")
            small = Path(plan_dir) / "tiny-imagenet-64.yaml"  # the tiny CvT at 64x64: 12x less work per image
            small.parent.mkdir(parents=True, exist_ok=True)
            small.write_text(tiny.replace("img_size: 224", "img_size: 64").replace(
                "name: tiny-imagenet\n", "name: tiny-imagenet-64\n"))
            return cls(smoke=True, device="cpu", models=[("tiny-imagenet-64", str(small))],
                       images={"tiny-imagenet-64": 8}, batch={"tiny-imagenet-64": 4}, warmup_batches=1,
                       timed_batches=2, num_workers=0,
                       compile=bool(plan.tiny and plan.compile), budget_s=budget)
        return cls(smoke=False, device="cuda", models=[("cvt-13-224", "cvt-13-224"),
                                                       ("cvt-w24-384-22k", "cvt-w24-384-22k")],
                   images={"cvt-13-224": 512, "cvt-w24-384-22k": 128}, batch={"cvt-13-224": 64, "cvt-w24-384-22k": 32},
                   warmup_batches=2, timed_batches=5, num_workers=default_num_workers(), compile=plan.compile,
                   budget_s=240.0 if budget is None else budget)


def _colour_field(seed: int, w: int, h: int):
    """(h, w, 3) uint8: a smooth random colour field plus noise, its own content per seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB").resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def make_photos(dest: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``dest/val/<wnid>/*.JPEG``: ``n`` generated photos (:func:`_colour_field`, seeds ``seed``...) under real
    WordNet ids, two per class."""
    from PIL import Image

    from cvt_port.labels import imagenet_wnids

    wnids = imagenet_wnids()
    for i in range(n):
        path = dest / "val" / wnids[(i // 2) * 37 % len(wnids)] / f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_colour_field(seed + i, *size), "RGB").save(path, quality=90)
    return dest


def make_checkpoint(variant, path: Path, device: str, probe_images: int = 16, seed: int = 0) -> dict:
    """A random model saved exactly as the release files are (plain state dict), whose predictions the image
    decides: ``randomize_``'s weights alone give every image the same class (the image-dependent part of the
    features is ~1% of their common part), which would make agreement trivially 1. So, as tests/evalkit.py's
    tiny model, the weights of 2 or more dimensions but the head's are 5x ``randomize_``'s (the image-dependent
    part becomes ~25%: a centred head then needs no large gain, which would amplify rounding), and the head is
    set from the features of ``probe_images`` colour fields (other seeds than the photos): ``W / sd``, bias
    ``-W @ mean``, W random with logits of std ~3. The probe runs in IEEE float32 on ``device``."""
    import torch

    from cvt_port.reference import OriginalCvT, randomize_
    from evaluate.numerics import float32_mode

    size = variant.preprocessing.img_size
    mean = torch.tensor(variant.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(variant.preprocessing.std).view(1, 3, 1, 1)
    probe = torch.stack([torch.from_numpy(_colour_field(10_000 + i, size, size)).permute(2, 0, 1)
                         for i in range(probe_images)]).float().div(255).sub(mean).div(std)
    with torch.no_grad():
        model = randomize_(OriginalCvT(variant.architecture), seed=seed).eval()
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not name.startswith("head"):
                p.mul_(5)
        with float32_mode(False):
            f = model.to(device).forward_features(probe.to(device)).double().cpu()
        model.cpu()
        mu, sd = f.mean(0), f.std(0).clamp_min(1e-6)
        g = torch.Generator().manual_seed(seed + 1)
        w = 3 * torch.randn(model.head.weight.shape, generator=g, dtype=torch.float64) / f.shape[1] ** 0.5 / sd
        model.head.weight.copy_(w.float())
        model.head.bias.copy_((-(w @ mu)).float())
        logits = (f @ w.T - w @ mu).float()
    torch.save(model.state_dict(), path)
    del model
    gc.collect()
    return {"probe_images": probe_images, "probe_distinct_top1": len(set(logits.argmax(-1).tolist())),
            "probe_feature_sd_mean": round(float(sd.mean()), 6)}


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


def bare_forward(model_dir: Path, img_size: int, batch: int, sz: Sizes, *, precision: str = "32-true",
                 attention: str = "einsum", compile: bool = False, tf32: bool = False) -> dict:
    """Images/s of ``model(pixel_values)`` on one pre-made batch: warm-up batches, then timed ones."""
    import torch

    import cvt_port
    from cvt_port.attention import set_attention
    from evaluate.numerics import float32_mode

    cuda = sz.device == "cuda"
    _reset_peak(cuda)
    dev = torch.device(sz.device)
    model = set_attention(cvt_port.load_model(model_dir), attention).to(dev).eval()
    fn = torch.compile(model) if compile else model
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(dev)
    mixed = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    with float32_mode(tf32), torch.inference_mode(), mixed:
        t0 = time.perf_counter()
        for _ in range(sz.warmup_batches):
            fn(pixel_values=x).logits.float()
        if cuda:
            torch.cuda.synchronize()
        warm_s = time.perf_counter() - t0
        with SyncCounter(cuda) as syncs:
            t0 = time.perf_counter()
            for _ in range(sz.timed_batches):
                fn(pixel_values=x).logits.float()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    out = {"images_per_second": sz.timed_batches * batch / dt, "timed_s": round(dt, 4), "warmup_s": round(warm_s, 3),
           "batches": sz.timed_batches, "batch_size": batch, "peak_mib": _peak_mib(cuda),
           "syncs_per_step": None if syncs.count is None else syncs.count / sz.timed_batches}
    del model, fn, x
    return out


def harness(m: dict, sz: Sizes, flags: dict, *, cache: bool, reference: bool) -> dict:
    """One pass through the product's run path (``run_plan``, nothing written): report.json's figures."""
    from evaluate.api import DataSpec, EvalPlan, ModelSpec, ReportSpec, RunSpec, run_plan

    cuda = sz.device == "cuda"
    plan = EvalPlan(
        models=ModelSpec(model=str(m["hf"]), config=m["config"], reference=m["pth"] if reference else None),
        data=DataSpec(source=str(m["photos"])),
        run=RunSpec(batch_size=m["batch"], num_workers=sz.num_workers, accelerator="gpu" if cuda else "cpu",
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


def prepare(ws: Workspace, label: str, config: str, sz: Sizes) -> dict:
    """Random weights in the release format, their conversion, generated photos and their cache."""
    import cvt_port
    from cvt_port.variants import get_variant
    from evaluate.api import DataSpec, EvalPlan, ModelSpec, ReportSpec, RunSpec, build_cache

    t0 = time.perf_counter()
    root = ws.work / "gpu" / label
    root.mkdir(parents=True, exist_ok=True)
    variant = get_variant(config)
    pth = root / (variant.release_file if variant.release_file else f"{label}.pth")
    probe = make_checkpoint(variant, pth, sz.device)
    hf = cvt_port.convert(pth, root / "hf", variant=config, overwrite=True, log=lambda msg: None)
    photos = make_photos(root / "photos", sz.images[label], (96, 72) if sz.smoke else (500, 375))
    plan = EvalPlan(models=ModelSpec(model=str(hf), config=config), data=DataSpec(source=str(photos)),
                    run=RunSpec(batch_size=sz.batch[label], num_workers=sz.num_workers, accelerator="cpu"),
                    report=ReportSpec(output=None, summary=False))
    with contextlib.redirect_stdout(sys.stderr):
        cache = build_cache(plan, root / "cache")
    return {"label": label, "config": config, "pth": pth, "hf": hf, "photos": photos, "cache": cache,
            "img_size": variant.preprocessing.img_size, "batch": sz.batch[label], "images": sz.images[label],
            "checkpoint_mib": round(pth.stat().st_size / 2**20, 1), **probe,
            "setup_s": round(time.perf_counter() - t0, 2)}


def _estimate(kind: str, setting: str, done: dict):
    """Seconds the next run of ``kind`` may take: the model's fp32 run of that kind (x6 under compile), and at
    least 60 s for a model's first compiled run (on 2 CPU cores the tiny CvT's first compilation took 60 s, the
    later ones in the same process 2-25 s: dynamo reuses its code for a new instance of the same model)."""
    base = done.get(("fp32", kind))
    if setting != "compile":
        return None if base is None else base * 1.2
    first = not any(k[0] == "compile" for k in done)
    return max(6 * (base or 0), 60.0 if first else 0.0) or None


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


def _brief(run: dict) -> str:
    keys = (("images_per_second", "img/s", ".1f"), ("max_abs_logit_diff", "max|dlogit|", ".2g"),
            ("agreement", "agree", ".4f"), ("peak_mib", "peak MiB", ".0f"), ("syncs_per_step", "syncs/step", ".1f"))
    parts = [f"{label} {fmt(run[k], spec)}" for k, label, spec in keys if run.get(k) is not None]
    return ", ".join(parts + [f"{run['wall_s']:.1f} s"] + [run[k] for k in ("error", "skipped") if k in run])


def _cell(ws: Workspace, m: dict, sz: Sizes, setting: str, flags: dict, done: dict, t_start: float) -> dict:
    """One model under one setting: its runs (each skipped when the budget cannot take it)."""
    cell: dict = {"model": m["label"], "setting": setting, "flags": flags, "skipped": None}
    for kind in RUNS:
        elapsed, est = time.perf_counter() - t_start, _estimate(kind, setting, done)
        if sz.budget_s is not None and (elapsed > sz.budget_s or (est and elapsed + est > sz.budget_s)):
            cell[kind] = {"skipped": f"budget ({elapsed:.0f} s used of {sz.budget_s:.0f}; "
                                     f"this run ~{fmt(est, '.0f')} s)"}
            continue
        t0 = time.perf_counter()
        try:
            if kind == "bare":
                cell[kind] = bare_forward(m["hf"], m["img_size"], m["batch"], sz, **flags)
            else:
                cell[kind] = harness(m, sz, flags, cache=kind != "jpeg", reference=kind == "reference")
        except Exception as exc:  # one failed run (out of memory, say) must not lose the others
            cell[kind] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            ws.notes.append(f"6: {m['label']} {setting} {kind}: {cell[kind]['error'][:200]}")
        cell[kind]["wall_s"] = done[(setting, kind)] = round(time.perf_counter() - t0, 2)
        progress(f"  {m['label']} {setting} {kind}: {_brief(cell[kind])}")  # the log keeps it if the check is cut
    if all("skipped" in cell[k] for k in RUNS):
        cell["skipped"] = cell["bare"]["skipped"]
    return cell


def run(ws: Workspace, sections: dict) -> dict:
    """Every model's eager settings first, then the compile cells (the slowest): within the budget, the
    numerics of both models come before compilation."""
    import torch

    cuda = torch.cuda.is_available()
    sz = Sizes.make(ws.plan, cuda, ws.work / "gpu")
    t_start = time.perf_counter()
    out: dict = {"description": "bare forward and harness (run_plan, output None) images/s, converted vs reference "
                                "max |logit diff| and top-1 agreement, peak GPU memory, synchronisations per step",
                 "device": torch.cuda.get_device_name(0) if sz.device == "cuda" else "cpu",
                 "sizes": asdict(sz), "sync_selftest": sync_selftest(sz.device == "cuda"), "models": {}, "cells": []}
    if sz.smoke:
        ws.notes.append("6: smoke mode on the CPU: tiny CvT at 64x64, 8 generated photos, batch 4; figures exercise "
                        "the code path, they do not measure a GPU")
    if out["sync_selftest"] not in (None, 1):
        ws.notes.append(f"6: the sync counter counted {out['sync_selftest']} synchronisations for one .item(): "
                        "the syncs/step figures are not to be trusted on this torch")
    cells, prepared, done = {}, {}, {}
    for phase in ("eager", "compile"):
        for label, config in sz.models:
            settings = [(s, f) for s, f in SETTINGS if (s == "compile") == (phase == "compile")]
            elapsed = time.perf_counter() - t_start
            if phase == "compile" and not sz.compile:
                why = ("smoke mode: its 5 compilations take ~1.5 min on 2 CPU cores (--compile measures it)"
                       if sz.smoke else "--no-compile")
                cells.update({(label, s): {"model": label, "setting": s, "skipped": why} for s, _ in settings})
                continue
            if label not in prepared and sz.budget_s is not None and elapsed > sz.budget_s:
                cells.update({(label, s): {"model": label, "setting": s,
                                           "skipped": f"budget ({elapsed:.0f} s used of {sz.budget_s:.0f})"}
                              for s, _ in settings})
                continue
            if label not in prepared:
                progress(f"gpu: preparing {label}")
                prepared[label] = prepare(ws, label, config, sz)
                out["models"][label] = {k: (str(v) if isinstance(v, Path) else v) for k, v in prepared[label].items()}
                progress(f"gpu: {label} ready in {prepared[label]['setup_s']:.1f} s")
            for setting, flags in settings:
                cells[(label, setting)] = _cell(ws, prepared[label], sz, setting, flags, done.setdefault(label, {}),
                                                t_start)
            if phase == "compile":
                torch._dynamo.reset()
    out["cells"] = [cells[(label, s)] for label, _ in sz.models for s, _ in SETTINGS]  # table order
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    out["process_max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    ws.notes.append("6: figures per model and setting: images/s of the bare forward, of the harness from JPEG and "
                    "from the cache; converted vs reference (a --reference run on the cache): max |logit diff| and "
                    "top-1 agreement; peak GPU memory allocated bare/harness/harness+reference; host-device "
                    "synchronisations per step harness/harness+reference (- where a CPU cannot measure: this "
                    f"process's peak RSS was {out['process_max_rss_mib']:.0f} MiB); "
                    "ratio = harness on the cache / bare")
    return out


def _g(run: dict | None, key: str, spec: str, width: int = 0, scale: float = 1.0) -> str:
    v = (run or {}).get(key)
    text = "-" if not isinstance(v, (int, float)) else format(v * scale, spec)
    return text.rjust(width)


def figures(cell: dict) -> str:
    """One cell as fixed-width text (rows line up in the table)."""
    if cell.get("skipped"):
        return f"skipped: {cell['skipped']}"
    b, j, c, r = (cell.get(k) or {} for k in RUNS)
    parts = [f"bare {_g(b, 'images_per_second', '.1f', 8)}, JPEG {_g(j, 'images_per_second', '.1f', 8)}, "
             f"cache {_g(c, 'images_per_second', '.1f', 8)} img/s",
             f"vs ref max|dlogit| {_g(r, 'max_abs_logit_diff', '.2g', 7)}, agree {_g(r, 'agreement', '.4f', 6)}",
             f"peak {_g(b, 'peak_mib', '.2f', 6, 1 / 1024)}/{_g(c, 'peak_mib', '.2f', 6, 1 / 1024)}/"
             f"{_g(r, 'peak_mib', '.2f', 6, 1 / 1024)} GiB",
             f"syncs/step {_g(c, 'syncs_per_step', '.1f', 5)}/{_g(r, 'syncs_per_step', '.1f', 5)}"]
    problems = [f"{k} {v.get('error') or v.get('skipped')}" for k, v in zip(RUNS, (b, j, c, r))
                if v.get("error") or v.get("skipped")]
    return "; ".join(parts + problems)


def rows(results: dict) -> list[dict]:
    s = results["sections"][KEY]
    dev = "CPU smoke" if s["sizes"]["smoke"] else s["device"]
    out = []
    for cell in s["cells"]:
        b, c = cell.get("bare") or {}, cell.get("cache") or {}
        ratio = (c["images_per_second"] / b["images_per_second"]
                 if isinstance(c.get("images_per_second"), (int, float)) and b.get("images_per_second") else None)
        out.append(row("6", f"{cell['model']} {cell['setting']} ({dev})", figures(cell),
                       fmt(ratio, ".2f") if ratio is not None else "-", "-", "-"))
    return out


if __name__ == "__main__":
    from .suite import main

    sys.exit(main(only=["gpu"]))
