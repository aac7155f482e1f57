"""The driver of the benchmarks: side by side in one run, one table, one results.json (its command line,
``python -m benchmarks [NAME ...]``, is :mod:`benchmarks.cli`).

Each benchmark is a module of this package with ``KEY`` (its section in results.json), ``NEEDS`` (the
benchmarks whose figures it reads, run first), ``run(workspace, sections) -> dict`` and ``rows(results)``
(its lines of the table); ``python -m benchmarks.<name>`` runs one alone. A new benchmark is a new module and
one entry in :data:`BENCHMARKS` (in :data:`DEFAULT` too if a plain ``python -m benchmarks`` should run it).

A missed target is reported, never an error: the exit status is 0 unless the benchmark itself could not run
(2 for bad arguments). Models are random-initialised (the figures are about speed and exactness, not
accuracy). Photos: ``../shared/data/imagenet-sample-100`` beside the repository (``--photos`` to override;
any ``val/<wnid>/*.JPEG`` folder), linked into the work folder, never copied.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import time
from dataclasses import asdict
from pathlib import Path

from .report import format_table, machine_info
from .timing import REPO, TARGETS, ProcessRunner, cpu_times, disturbance, fmt, progress
from .workspace import Plan, Workspace

BENCHMARKS = ("harness_overhead", "cache_vs_jpeg", "conversion", "options", "scaling", "multi_model", "cache_stat",
              "scale", "compile_cpu", "gpu", "startup")  # table order
# what a plain `python -m benchmarks` runs (gpu: `python -m benchmarks gpu`, on a GPU; multi_model: by name, it
# would add about a quarter to the full run; cache_stat: by name, it writes 50,000 files; scale: by name, about an
# hour at full size; compile_cpu: by name, minutes of compilation; startup: by name, its figures are the cluster
# page's)
DEFAULT = tuple(n for n in BENCHMARKS if n not in ("multi_model", "cache_stat", "scale", "compile_cpu", "gpu", "startup"))
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample-100"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results.json"
SCHEMA = 1


def load(name: str):
    return importlib.import_module(f"benchmarks.{name}")


def with_needs(names: list[str]) -> list[str]:
    """``names`` and every benchmark they read from, in table order."""
    wanted = set()

    def add(n):
        if n not in wanted:
            wanted.add(n)
            for dep in load(n).NEEDS:
                add(dep)

    for n in names:
        add(n)
    return [n for n in BENCHMARKS if n in wanted]


def notes_of(plan: Plan, ws: Workspace, start: dict, total: dict, per_section: dict, wall: float,
             shared: bool = True) -> list[str]:
    """The run's notes; ``shared``: whether a benchmark used the plan's model and photos (their sizes noted)."""
    notes = list(ws.notes)
    if shared and not plan.tiny:
        notes.append(f"{plan.images} images per harness pass (the 100 photos, some twice, through links), batch "
                     f"size {plan.batch_size}; the batch sweep times {plan.sweep_images} images per size and pass; "
                     "sized to keep the full run under 15 minutes on 2 cores")
    if shared and plan.reference_subset:
        notes.append(f"--reference runs (two models per pass) use --subset {plan.reference_subset}")
    if shared and plan.tiny:
        notes.append(f"--tiny: tiny CvT at 64x64, {plan.images} photos, 1 repeat, tiny conversion, no compile, bf16/sdpa speed "
                     "taken from their --reference runs: figures exercise the code, they do not measure the targets")
    for key, d in per_section.items():
        if d["foreign_cpu_share"] is not None and d["foreign_cpu_share"] > 0.05:
            notes.append(f"{key}: other processes used {d['foreign_cpu_s']} CPU s "
                         f"({100 * d['foreign_cpu_share']:.0f}% of the machine) while it ran: figures may be disturbed")
    notes.append(f"load average before {start['loadavg'][0]:.2f}, after {total['loadavg_after'][0]:.2f}; "
                 f"other processes used {total['foreign_cpu_s']} CPU s during the run "
                 f"({fmt(100 * (total['foreign_cpu_share'] or 0), '.1f')}% of the machine); total {wall:.0f} s")
    return notes


def run_benchmarks(names: list[str], plan: Plan, photos: Path, work: Path, command: list[str],
                   verbose: bool = False, runner: ProcessRunner | None = None) -> dict:
    """Run the named benchmarks (and those they read from) in ``work``; the whole results record. ``runner``:
    what runs the timed commands (default: a :class:`ProcessRunner` in ``work``)."""
    names = with_needs(names)
    t_start, start = time.perf_counter(), cpu_times()
    ws = Workspace(plan, work, photos, verbose, runner=runner)
    results = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "benchmarks": names,
        "config": {**asdict(plan), "photos": str(photos)},
        "machine": machine_info(),
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
    }
    progress(f"benchmarks: work folder {work}; load average {os.getloadavg()[0]:.2f}")
    shared = any(getattr(load(n), "USES_MODEL", True) for n in names)
    if shared:
        progress("setup: random model in the release format, converted")
        results["setup"] = ws.setup()
    sections, per_section = {}, {}
    for name in names:
        mod = load(name)
        progress(f"section {mod.KEY} (benchmarks.{name})")
        c0 = cpu_times()
        sections[mod.KEY] = mod.run(ws, sections)
        per_section[mod.KEY] = sections[mod.KEY]["disturbance"] = disturbance(c0, cpu_times())
    results["sections"] = sections
    results["disturbance"] = total = disturbance(start, cpu_times())
    results["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    results["notes"] = notes_of(plan, ws, start, total, per_section, results["total_wall_s"], shared)
    results["table"] = [r for n in names for r in load(n).rows(results)]
    results["table_text"] = format_table(results["table"])
    return results
