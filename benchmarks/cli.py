"""``python -m benchmarks [NAME ...]``: the benchmarks, side by side in one run, one table, one results.json.

The command line of :mod:`benchmarks.suite` (and of ``python -m benchmarks.<name>``, one benchmark alone): the
only module of the package that parses flags; what it parsed reaches the benchmarks as a :class:`Plan` and plain
arguments. Exit status 0 whether or not the targets are met (a benchmark reports; it does not gate), 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .report import write_results
from .suite import BENCHMARKS, DEFAULT, DEFAULT_OUTPUT, DEFAULT_PHOTOS, load, run_benchmarks, with_needs
from .timing import progress
from .workspace import Plan


def build_parser(prog: str, partial: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] + " Exit status 0 whether or not "
                                "the targets are met (a benchmark reports; it does not gate).")
    if not partial:
        p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)} "
                       "(default: all; those they read from run too)")
    p.add_argument("--tiny", "--smoke", dest="tiny", action="store_true", help="a tiny model at 64x64, 8 photos, 1 "
                   "repeat, a tiny conversion, no compile: every benchmark in about a minute (for the tests); gpu: its CPU smoke "
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
    p.add_argument("--scale-per-class", type=per_class_list, metavar="N,N,...", help="scale: the sizes, in images "
                   "per class of the 1,000 (default 5,20,50: 5,000, 20,000 and 50,000 images; --tiny: 4 of 10 classes)")
    p.add_argument("--scale-data", type=Path, help="scale: where its data set is made once and kept (default: "
                   "cvt-bench-scale beside the work folder, in --workdir)")
    p.add_argument("--verbose", action="store_true", help="show every command")
    return p


def per_class_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas, e.g. 5,20,50") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be at least 1 image per class")
    return values


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
                     compile=args.compile, budget_s=args.budget_s, scale_per_class=args.scale_per_class,
                     scale_data=str(args.scale_data.expanduser().resolve()) if args.scale_data else None)
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
