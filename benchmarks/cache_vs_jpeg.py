"""The preprocessed cache against the JPEG path.

Data-path throughput (the harness's own DataLoader, no model) of ``python -m evaluate cache build``'s cache vs
the JPEGs (target: at least 10x); a whole harness run on the cache whose predictions.csv must be byte-identical
to the JPEG run's and whose report.json figures must be the same; a cache made for other settings refused
(exit status 2). Reads the harness-overhead benchmark's JPEG run. ``python -m benchmarks.cache_vs_jpeg`` runs
it (and that one) alone.
"""

from __future__ import annotations

import filecmp
import json
import sys
import time
from pathlib import Path

from .report import fr, row, yn
from .timing import fmt, met, median, progress, ratio, slim, target_dict
from .workspace import Workspace, harness_ips

KEY = "2_cache"
NEEDS = ("harness_overhead",)

# What report.json says about the images and the models' answers (everything but timing, paths and the
# data source): a run on the cache must agree with the JPEG run on every one of them. Each must be present.
REPORT_FIGURES = ("num_samples", "top1", "top5", "top1_ci95", "real_top1", "gate", "checks", "models",
                  "top1_differs", "subset_sha256", "num_bad_images", "bad_images")


def compare_reports(a: Path, b: Path) -> dict:
    """Whether two output folders hold the same figures: every :data:`REPORT_FIGURES` key of their report.json
    (missing in either: not the same) and their per_class.csv, byte for byte."""
    try:
        ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    except (OSError, ValueError) as e:
        return {"identical": False, "error": str(e)}
    missing = [k for k in REPORT_FIGURES if k not in ra or k not in rb]
    differing = [k for k in REPORT_FIGURES if k in ra and k in rb and ra[k] != rb[k]]
    pa, pb = a / "per_class.csv", b / "per_class.csv"
    per_class = pa.is_file() and pb.is_file() and filecmp.cmp(pa, pb, shallow=False)
    return {"identical": not missing and not differing and per_class, "compared": list(REPORT_FIGURES),
            "missing": missing, "differing": differing, "per_class_csv_identical": per_class}


def loader_throughput(dataset, batch_size: int, workers: int) -> float:
    """Images per second of the harness's own DataLoader (EvalDataModule, no trainer), start to end."""
    from evaluate.validation.data_module import EvalDataModule

    t0 = time.perf_counter()
    n = 0
    for batch in EvalDataModule(dataset, batch_size, workers).val_dataloader():
        n += len(batch["index"])
    return n / (time.perf_counter() - t0)


def _datasets(ws: Workspace, cache_dir: Path, cache_built: bool):
    """(the JPEG dataset, the cache dataset or None) of the workspace's photos, as the harness builds them."""
    from evaluate.pixels.cache import open_cache
    from evaluate.pixels.dataset import EvalDataset
    from evaluate.sources.layouts import discover
    from evaluate.models.folders import inspect_folder
    from evaluate.pixels.preprocess import ReleaseTransform

    source = discover(ws.photos, label2id=inspect_folder(str(ws.hf)).label2id)
    samples = list(source.samples)
    transforms = {"release": ReleaseTransform(ws.variant.preprocessing)}
    return EvalDataset(source, samples, transforms), open_cache(cache_dir, samples, transforms) if cache_built else None


def run(ws: Workspace, sections: dict) -> dict:
    p, s1 = ws.plan, sections["1_harness_overhead"]
    w = p.num_workers
    cache_dir = ws.work / "cache"
    build = ws.runner.module("cache-build", "evaluate", "cache", "build", "--model", ws.hf, "--config", ws.config,
                             "--data", ws.photos, "--cache-dir", cache_dir)
    progress(f"  cache build: exit {build['rc']}, {build['wall_s']:.1f} s")
    jpeg_ds, cache_ds = _datasets(ws, cache_dir, build["rc"] == 0)

    data_path = {}
    for kind, workers in (("jpeg", w), ("jpeg", 0), ("cache", 0), ("cache", w)):
        ds = jpeg_ds if kind == "jpeg" else cache_ds
        times = [loader_throughput(ds, p.batch_size, workers) if ds is not None else None for _ in range(p.repeats)]
        data_path[f"{kind}_workers{workers}"] = {"images_per_second": times, "median": median(times),
                                                 "num_workers": workers}
        progress(f"  data path {kind}_workers{workers}: {fmt(median(times), '.1f')} img/s")
    rt = ratio(data_path["cache_workers0"]["median"], data_path[f"jpeg_workers{w}"]["median"])
    rt_same = ratio(data_path[f"cache_workers{w}"]["median"], data_path[f"jpeg_workers{w}"]["median"])

    # the whole harness on the cache (same settings as the first JPEG run), its outputs compared with that run's
    cached = [ws.harness("s2-cache-fp32", "--cache-dir", cache_dir)]  # one run: the figure is information
    jpeg_out, cache_out = Path(s1["harness"]["runs"][0]["output"]), Path(cached[0]["output"])
    jpeg_pred, cache_pred = jpeg_out / "predictions.csv", cache_out / "predictions.csv"
    identical = jpeg_pred.is_file() and cache_pred.is_file() and filecmp.cmp(jpeg_pred, cache_pred, shallow=False)
    same = compare_reports(jpeg_out, cache_out)

    refusals = []
    attempts = [("s2-refuse-subset", f"--subset {p.refusal_subset}", [True, "--subset", str(p.refusal_subset)])]
    if not p.tiny:  # one refusal is enough to exercise the code; the full run shows both
        attempts.append(("s2-refuse-config", "--config cvt-13-384", [False, "--config", "cvt-13-384"]))
    for tag, label, (own_config, *extra) in attempts:
        out = ws.work / "runs" / tag
        rec = ws.runner.module(f"evaluate-{tag}", "evaluate",
                               *ws.evaluate_args(out, "--cache-dir", cache_dir, *extra, config=own_config))
        message = next((ln for ln in rec["stderr_tail"].splitlines() if ln.startswith("error:")), "")
        refusals.append({"flags": label, "rc": rec["rc"], "wall_s": rec["wall_s"], "message": message,
                         "refused_as_expected": rec["rc"] == 2 and "cache" in message
                         and not (out / "report.json").exists()})
        progress(f"  refusal {label}: exit {rec['rc']}: {message[:120]}")

    harness_cache = median(harness_ips(cached))
    return {
        "description": "data path = the harness's DataLoader (EvalDataModule) iterated to the end, no model; "
                       "JPEG: EvalDataset (decode + resize + crop); cache: open_cache (memory-mapped uint8)",
        "images": p.images, "batch_size": p.batch_size,
        "cache_build": slim(build),
        "data_path": data_path,
        "ratio": rt,
        "ratio_cache_default_workers": rt_same,
        "target": target_dict("cache_speedup"),
        "met": met(rt["value"], "cache_speedup"),
        "harness_with_cache": {"runs": cached, "images_per_second": harness_ips(cached), "median": harness_cache,
                               "ratio_to_jpeg_harness": ratio(harness_cache, s1["harness"]["median"]),
                               "ratio_to_bare": ratio(harness_cache, s1["bare"]["median"])},
        "predictions_identical": bool(identical),
        "predictions_files": [str(jpeg_pred), str(cache_pred)],
        "report_figures_identical": same["identical"],
        "report_comparison": same,
        "mismatched_cache_refused": refusals,
        "all_refused": all(r["refused_as_expected"] for r in refusals),
    }


def rows(results: dict) -> list[dict]:
    s2, w = results["sections"][KEY], results["config"]["num_workers"]
    dp, hc = s2["data_path"], s2["harness_with_cache"]
    same = s2["predictions_identical"] and s2["report_figures_identical"]
    return [
        row("2", "cache data path vs JPEG",
            f"cache {fmt(dp['cache_workers0']['median'], '.0f')} img/s (0 workers; {w} workers "
            f"{fmt(dp[f'cache_workers{w}']['median'], '.0f')}) / JPEG {fmt(dp[f'jpeg_workers{w}']['median'], '.0f')} "
            f"img/s ({w} workers; 0 workers {fmt(dp['jpeg_workers0']['median'], '.0f')})",
            fr(s2["ratio"], ".1f", "x"), ">= 10x", yn(s2["met"])),
        row("2", "predictions: cache vs JPEG run",
            f"predictions.csv byte-identical: {str(s2['predictions_identical']).lower()}; report figures identical: "
            f"{str(s2['report_figures_identical']).lower()}; harness on cache {fmt(hc['median'], '.2f')} img/s",
            fr(hc["ratio_to_jpeg_harness"], ".2f", " (speed)"), "identical", yn(same)),
        row("2", "cache of other settings refused",
            "; ".join(f"{r['flags']}: exit {r['rc']}" for r in s2["mismatched_cache_refused"]), "-", "exit 2",
            yn(s2["all_refused"])),
    ]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["cache_vs_jpeg"]))
