"""``python -m benchmarks [NAME ...]``: the benchmarks, side by side in one run, one table, one results.json.

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

import argparse
import datetime as _dt
import importlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .report import format_table, machine_info, write_results
from .timing import REPO, TARGETS, cpu_times, disturbance, fmt, progress
from .workspace import Plan, Workspace

BENCHMARKS = ("harness_overhead", "cache_vs_jpeg", "conversion", "options", "scaling", "multi_model", "gpu")  # table order
# what a plain `python -m benchmarks` runs (gpu: `python -m benchmarks gpu`, on a GPU; multi_model: by name, it
# would add about a quarter to the full run)
DEFAULT = tuple(n for n in BENCHMARKS if n not in ("multi_model", "gpu"))
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
        notes.append(f"--tiny: tiny CvT, {plan.images} photos, 1 repeat, tiny conversion, no compile, bf16/sdpa speed "
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
                   verbose: bool = False) -> dict:
    """Run the named benchmarks (and those they read from) in ``work``; the whole results record."""
    names = with_needs(names)
    t_start, start = time.perf_counter(), cpu_times()
    ws = Workspace(plan, work, photos, verbose)
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


def build_parser(prog: str, partial: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] + " Exit status 0 whether or not "
                                "the targets are met (a benchmark reports; it does not gate).")
    if not partial:
        p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)} "
                       "(default: all; those they read from run too)")
    p.add_argument("--tiny", "--smoke", dest="tiny", action="store_true", help="a tiny model, 8 photos, 1 repeat, a "
                   "tiny conversion, no compile: every benchmark in about a minute (for the tests); gpu: its CPU smoke "
                   "mode (also without CUDA)")
    p.add_argument("--budget-s", type=float, help="gpu: seconds its cells may take; a run that would not fit is "
                   "reported as skipped (default 240 on a GPU, none in smoke mode)")
    p.add_argument("--repeats", type=int, help="repeats per timed figure; the median is reported (default 3)")
    p.add_argument("--images", type=int, help="images per harness pass (default 192: the 100 photos, 92 of them "
                   "twice, through links; --tiny: 8)")
    p.add_argument("--batch-size", type=int, help="batch size of the harness and bare loop (default 32; --tiny: 4)")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of ImageNet JPEGs "
                   f"(val/<wnid>/*.JPEG; default {DEFAULT_PHOTOS})")
    p.add_argument("--workdir", type=Path, help="where work files go (a fresh folder is made inside it; default: "
                   "the system temp folder); removed at the end unless --keep")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--output", type=Path, help="results file (default: " + ("none" if partial else
                   f"{DEFAULT_OUTPUT} when every benchmark runs, else none") + ")")
    compile_ = p.add_mutually_exclusive_group()
    compile_.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                          help="skip the --compile measurement")
    compile_.add_argument("--compile", dest="compile", action="store_true", help="measure --compile even with --tiny")
    p.add_argument("--verbose", action="store_true", help="show every command")
    return p


def main(argv: list[str] | None = None, only: list[str] | None = None) -> int:
    """The command line of ``python -m benchmarks`` (``only``: of ``python -m benchmarks.<name>``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"python -m benchmarks.{only[0]}" if only else "python -m benchmarks"
    args = build_parser(prog, partial=bool(only)).parse_args(argv)
    names = only or args.names or list(DEFAULT)
    output = args.output or (DEFAULT_OUTPUT if names == list(DEFAULT) else None)  # a partial run keeps the record
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    photos = args.photos.expanduser().resolve()
    if not photos.is_dir() and any(getattr(load(n), "USES_PHOTOS", True) for n in with_needs(names)):
        print(f"error: --photos {photos}: no such folder (any val/<wnid>/*.JPEG folder will do)", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plan = Plan.make(tiny=args.tiny, repeats=args.repeats, images=args.images, batch_size=args.batch_size,
                     compile=args.compile, budget_s=args.budget_s)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cvt-bench-", dir=args.workdir))
    try:
        results = run_benchmarks(names, plan, photos, work, [sys.executable, "-m", prog.split()[-1], *argv],
                                 verbose=args.verbose)
        print(results["table_text"])
        print()
        for n in results["notes"]:
            print(f"note: {n}")
        if output:
            write_results(results, output)
            print(f"results: {output}")
    finally:
        if args.keep:
            progress(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0
