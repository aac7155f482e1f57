"""Several models in one job against one run per model (issue 15.3).

Three model folders (the workspace's converted model and two copies under other names: the figures are about
speed, not accuracy) on the same photos: ``python -m evaluate --model A --model B --model C`` (one process,
one pass, each image decoded once) against three ``python -m evaluate --model X`` runs, on the JPEGs and on the
preprocessed cache (``cache build`` once, both sides reading it). The figure is the ratio of wall-clock times
(three separate runs, summed, over the one job: process start, imports and decoding are paid once instead of
three times). Each model's top-1 in the job must equal its separate run's. ``python -m benchmarks.multi_model``
runs it alone; not in a plain ``python -m benchmarks`` (it adds about as much as the harness section again).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from .report import fr, row, yn
from .timing import fmt, progress, ratio, slim
from .workspace import Workspace

KEY = "6_multi_model"
NEEDS: tuple[str, ...] = ()
MODELS = 3


def _args(ws: Workspace, models: list[Path], out: Path, *extra) -> list:
    return [*[a for m in models for a in ("--model", m)], "--config", ws.config, "--data", ws.photos,
            "--batch-size", ws.plan.batch_size, "--num-workers", ws.plan.num_workers, "--accelerator", "cpu",
            "--devices", "1", "--output", out, *extra]


def _top1s(out: Path) -> list | None:
    """Each model's top-1 in an output folder's report.json (one record, or a several-models job's runs)."""
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return [r["top1"] for r in report.get("runs", [report])]


def _side(ws: Workspace, models: list[Path], tag: str, *extra) -> dict:
    """One job of every model, then one run per model; their wall times and whether the figures agree."""
    runs = ws.work / "runs"
    job = ws.runner.module(f"evaluate-{tag}-job", "evaluate", *_args(ws, models, runs / f"{tag}-job", *extra))
    job_top1 = _top1s(runs / f"{tag}-job")
    progress(f"  {tag}: one job of {len(models)} models: exit {job['rc']}, {job['wall_s']:.1f} s")
    alone, alone_top1 = [], []
    for i, m in enumerate(models):
        rec = ws.runner.module(f"evaluate-{tag}-alone{i}", "evaluate", *_args(ws, [m], runs / f"{tag}-alone{i}", *extra))
        alone.append(slim(rec))
        alone_top1 += _top1s(runs / f"{tag}-alone{i}") or [None]
        progress(f"  {tag}: model {i + 1} alone: exit {rec['rc']}, {rec['wall_s']:.1f} s")
    separate = sum(r["wall_s"] for r in alone)
    # a verdict everywhere (random weights: the tiny config is not made, CvT-13's recorded top-1 fails), and the job's
    # exit status the worst of the separate runs' (fail 1 > not made 3 > pass 0)
    severity = {0: 0, 3: 1, 1: 2}
    rcs = [r["rc"] for r in alone]
    ok = job["rc"] in severity and all(rc in severity for rc in rcs) and job["rc"] == max(rcs, key=severity.get)
    return {"job": slim(job), "alone": alone, "job_wall_s": job["wall_s"], "separate_wall_s": round(separate, 2),
            "ratio": ratio(separate, job["wall_s"]) if ok else ratio(None, None),
            "top1_job": job_top1, "top1_alone": alone_top1,
            "figures_identical": ok and job_top1 is not None and job_top1 == alone_top1}


def run(ws: Workspace, sections: dict) -> dict:
    models = [Path(ws.hf)]
    for i in range(2, MODELS + 1):
        copy = ws.work / "models" / f"hf-{i}"
        if copy.exists():
            shutil.rmtree(copy)
        models.append(Path(shutil.copytree(ws.hf, copy)))
    jpeg = _side(ws, models, "s6-jpeg")
    cache_dir = ws.work / "cache-multi"
    build = ws.runner.module("cache-build-multi", "evaluate", "cache", "build", *_args(ws, models, ws.work / "unused")[:-2],
                             "--cache-dir", cache_dir)
    progress(f"  cache build ({MODELS} models, one preprocessing): exit {build['rc']}, {build['wall_s']:.1f} s")
    cache = _side(ws, models, "s6-cache", "--cache-dir", cache_dir)
    return {
        "description": f"{MODELS} models (one converted folder and copies) in one python -m evaluate job vs one run "
                       "per model, same photos, batch and workers; ratio = the separate runs' wall times summed / the "
                       "job's wall time (process start, imports and decoding paid once)",
        "models": MODELS, "images": ws.plan.images, "batch_size": ws.plan.batch_size,
        "jpeg": jpeg, "cache_build": slim(build), "cache": cache,
    }


def rows(results: dict) -> list[dict]:
    s = results["sections"][KEY]
    return [
        row("6", f"{s['models']} models in one job vs separate runs ({where})",
            f"one job {fmt(side['job_wall_s'], '.1f')} s / {s['models']} runs {fmt(side['separate_wall_s'], '.1f')} s; "
            f"per-model top-1 identical: {str(side['figures_identical']).lower()}",
            fr(side["ratio"], ".2f", "x"), "identical", yn(side["figures_identical"]))
        for where, side in (("JPEG", s["jpeg"]), ("cache", s["cache"]))
    ]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["multi_model"]))
