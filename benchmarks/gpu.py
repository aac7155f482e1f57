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

import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .gpu_runs import bare_forward, harness, prepare, sync_selftest
from .report import fr, row
from .timing import fmt, progress, ratio
from .workspace import Workspace, tiny_config

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

        budget = getattr(plan, "budget_s", None)
        if plan.tiny or not cuda:
            small = tiny_config(plan_dir)  # the tiny CvT at 64x64: 12x less work per image
            return cls(smoke=True, device="cpu", models=[("tiny-imagenet-64", str(small))],
                       images={"tiny-imagenet-64": 8}, batch={"tiny-imagenet-64": 4}, warmup_batches=1,
                       timed_batches=2, num_workers=0,
                       compile=bool(plan.tiny and plan.compile), budget_s=budget)
        return cls(smoke=False, device="cuda", models=[("cvt-13-224", "cvt-13-224"),
                                                       ("cvt-w24-384-22k", "cvt-w24-384-22k")],
                   images={"cvt-13-224": 512, "cvt-w24-384-22k": 128}, batch={"cvt-13-224": 64, "cvt-w24-384-22k": 32},
                   warmup_batches=2, timed_batches=5, num_workers=default_num_workers(), compile=plan.compile,
                   budget_s=240.0 if budget is None else budget)


def _estimate(kind: str, setting: str, done: dict):
    """Seconds the next run of ``kind`` may take: the model's fp32 run of that kind (x6 under compile), and at
    least 60 s for a model's first compiled run (on 2 CPU cores the tiny CvT's first compilation took 60 s, the
    later ones in the same process 2-25 s: dynamo reuses its code for a new instance of the same model)."""
    base = done.get(("fp32", kind))
    if setting != "compile":
        return None if base is None else base * 1.2
    first = not any(k[0] == "compile" for k in done)
    return max(6 * (base or 0), 60.0 if first else 0.0) or None


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
                cell[kind] = bare_forward(m["hf"], m["img_size"], m["batch"], device=sz.device, **flags,
                                          warmup_batches=sz.warmup_batches, timed_batches=sz.timed_batches)
            else:
                cell[kind] = harness(m, device=sz.device, num_workers=sz.num_workers, flags=flags,
                                     cache=kind != "jpeg", reference=kind == "reference")
        except Exception as exc:  # one failed run (out of memory, say) must not lose the others
            cell[kind] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            ws.notes.append(f"6: {m['label']} {setting} {kind}: {cell[kind]['error'][:200]}")
        cell[kind]["wall_s"] = done[(setting, kind)] = round(time.perf_counter() - t0, 2)
        progress(f"  {m['label']} {setting} {kind}: {_brief(cell[kind])}")  # the log keeps it if the check is cut
    if all("skipped" in cell[k] for k in RUNS):
        cell["skipped"] = cell["bare"]["skipped"]
    cell["ratio"] = ratio(cell["cache"].get("images_per_second"), cell["bare"].get("images_per_second"))
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
                prepared[label] = prepare(ws.work / "gpu" / label, label, config, images=sz.images[label],
                                          batch=sz.batch[label], photo_size=(96, 72) if sz.smoke else (500, 375),
                                          device=sz.device, num_workers=sz.num_workers)
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


def _gib(run: dict, key: str):
    v = run.get(key)
    return v / 1024 if isinstance(v, (int, float)) else None


def figures(cell: dict) -> str:
    """One cell as fixed-width text (rows line up in the table; "-" where there is no figure)."""
    if cell.get("skipped"):
        return f"skipped: {cell['skipped']}"
    b, j, c, r = (cell.get(k) or {} for k in RUNS)
    parts = [f"bare {fmt(b.get('images_per_second'), '8.1f', '-')}, JPEG {fmt(j.get('images_per_second'), '8.1f', '-')}, "
             f"cache {fmt(c.get('images_per_second'), '8.1f', '-')} img/s",
             f"vs ref max|dlogit| {fmt(r.get('max_abs_logit_diff'), '7.2g', '-')}, "
             f"agree {fmt(r.get('agreement'), '6.4f', '-')}",
             f"peak {'/'.join(fmt(_gib(x, 'peak_mib'), '6.2f', '-') for x in (b, c, r))} GiB",
             f"syncs/step {fmt(c.get('syncs_per_step'), '5.1f', '-')}/{fmt(r.get('syncs_per_step'), '5.1f', '-')}"]
    problems = [f"{k} {v.get('error') or v.get('skipped')}" for k, v in zip(RUNS, (b, j, c, r))
                if v.get("error") or v.get("skipped")]
    return "; ".join(parts + problems)


def rows(results: dict) -> list[dict]:
    """A row per model and setting; ratio = harness on the cache / bare."""
    s = results["sections"][KEY]
    dev = "CPU smoke" if s["sizes"]["smoke"] else s["device"]
    return [row("6", f"{cell['model']} {cell['setting']} ({dev})", figures(cell),
                fr(cell.get("ratio"), ".2f") if (cell.get("ratio") or {}).get("value") is not None else "-", "-", "-")
            for cell in s["cells"]]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["gpu"]))
