"""Shared reporting helpers: table rows, the text table, the machine description, results.json."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from .timing import fmt

COLUMNS = ("section", "benchmark", "figures", "ratio", "target", "met")
HEADINGS = ("#", "benchmark", "figures", "ratio", "target", "met")


def row(section: str, benchmark: str, figures: str, ratio: str, target: str, met: str) -> dict:
    """One line of the table (every cell already text)."""
    return dict(zip(COLUMNS, (section, benchmark, figures, ratio, target, met)))


def fr(r, spec: str = ".2f", suffix: str = "") -> str:
    """A ratio dict (or a number) as text."""
    return f"{fmt(r.get('value') if isinstance(r, dict) else r, spec)}{suffix}"


def yn(v) -> str:
    return "n/a" if v is None else ("yes" if v else "no")


def format_table(rows: list[dict]) -> str:
    cells = [HEADINGS] + [tuple(str(r[k]) for k in COLUMNS) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADINGS))]

    def line(c):
        return " | ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip()

    return "\n".join([line(cells[0]), "-+-".join("-" * w for w in widths)] + [line(c) for c in cells[1:]])


def machine_info() -> dict:
    import lightning
    import torch
    import transformers

    model = mem = None
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    cuda = torch.cuda.is_available()
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "memory_gib": mem,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda_available": cuda,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def write_results(results: dict, path: Path) -> None:
    """results.json, written whole (a temporary file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    os.replace(tmp, path)
