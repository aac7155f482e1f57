"""Full scale on one machine: the whole path on an ImageNet-shaped validation set of 5,000, 20,000 and 50,000
JPEGs, and the slope of each cost against the number of images (issue 26).

The set (:mod:`benchmarks.synthetic.imagenet_scale`: 1,000 WordNet-id folders, the real set's typical sizes,
about 130 KiB a file) is made once and kept beside the run's work folder (``<workdir>/cvt-bench-scale/``, reused by
later runs; each size a folder of hard links). The model is the small CvT of ``configs/testing/tiny-imagenet.yaml``
at 224 (random weights; ``--tiny``: at 64, 10 classes, 4 images a class). For each size, each a real
``python -m evaluate`` process under the measuring middleman: the JPEG pass on 1 and 2 processes, ``cache build``,
the cached pass on 1 and 2 processes, the cached pass with the original (``--reference``) on every image and on
the paired checks' sample only (``--reference-sample``: the saving), and the time from the command to the first
image scored, from the JPEGs and from the cache (:mod:`benchmarks.first_batch`). Each run: wall time, images/s,
the peak RSS of every process (each rank and each DataLoader worker, :mod:`benchmarks.proc_peaks`), the report's
size; each size: the cache's size. Slopes (least squares against the number of images): seconds and MiB per
image; a flat memory slope means nothing is kept per image but the predictions. ``python -m benchmarks scale``
(not in a plain run: about an hour at full size on 2 cores); the figures so far are kept in
``cvt-bench-scale/partial.json`` after each size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from .report import row
from .timing import fmt, progress, slim
from .workspace import Workspace, derived_config, tiny_config

KEY = "7_scale"
NEEDS: tuple[str, ...] = ()
USES_MODEL = False  # its own model at 224 and its own data set
USES_PHOTOS = False
PASSES = ("jpeg_1", "jpeg_2", "cache_build", "cache_1", "cache_2")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def slope(xs: list, ys: list) -> float | None:
    """Least-squares slope of ys against xs (None with fewer than two usable points)."""
    pts = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float))]
    if len(pts) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def small_config(folder: Path) -> Path:
    """``folder/scale-small.yaml``: the tiny CvT of ``configs/testing/tiny-imagenet.yaml`` at 224 with a stage-1
    stride of 8 instead of 4. Why: the tiny one's first-stage attention over 56x56 tokens (against 28x28) runs at
    34 img/s on one of this machine's cores, 25 minutes a pass of 50,000 images; this one at about 400 img/s, so
    the harness's own costs per image (decoding, caching, metrics, the predictions kept) are what the slopes show."""
    return derived_config(folder, "scale-small", img_size=224, patch_stride=[8, 2, 2])


def _model(ws: Workspace, root: Path) -> tuple[str, Path, Path]:
    """(config, original .pth, converted folder) of the small CvT: made once per run."""
    import cvt_port
    from cvt_port.variants import get_variant
    from benchmarks.synthetic.checkpoints import save_release_checkpoint

    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    config = str(tiny_config(models) if ws.plan.tiny else small_config(models))
    pth = models / "scale-tiny.pth"
    save_release_checkpoint(get_variant(config), pth, seed=0)
    hf = cvt_port.convert(pth, models / "hf", variant=config, overwrite=True, log=lambda m: None)
    return config, pth, Path(hf)


def _run(ws: Workspace, tag: str, args: list, env: dict | None = None) -> dict:
    out = ws.work / "scale-runs" / tag
    rec = ws.runner.module(f"scale-{tag}", "evaluate", *args, "--output", out, timeout=4 * 3600, env=env,
                           per_process=True)
    report = out / "report.json"
    data = json.loads(report.read_text()) if report.is_file() else {}
    rec.update({k: data.get(k) for k in ("images_per_second", "num_samples", "world_size", "gate", "checks",
                                         "pass_seconds", "reference_sample")})
    rec["report_bytes"] = folder_bytes(out) if out.is_dir() else None
    rec["report_json_bytes"] = report.stat().st_size if report.is_file() else None
    progress(f"  {tag}: exit {rec['rc']}, {rec['wall_s']:.1f} s, {fmt(rec.get('images_per_second'), '.1f')} img/s, "
             f"peak RSS {_peaks(rec)}")
    return slim(rec)


def _peaks(rec: dict) -> str:
    return ", ".join(f"{p['role']} {p['peak_rss_mib']:.0f}" for p in rec.get("processes") or []) or "-"


def _first_batch(ws: Workspace, tag: str, args: list) -> dict:
    out = ws.work / "scale-runs" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = ws.runner.module(f"scale-{tag}", "benchmarks.first_batch", out, repr(time.time()), *args, "--output",
                           ws.work / "scale-runs" / tag, timeout=3600)
    rec["marks"] = json.loads(out.read_text()) if out.is_file() else None
    progress(f"  {tag}: {rec['marks']}")
    return slim(rec)


def _common(ws: Workspace, config: str, hf: Path, data: Path) -> list:
    p = ws.plan
    return ["--model", hf, "--config", config, "--data", data, "--batch-size", p.batch_size,
            "--num-workers", p.num_workers, "--accelerator", "cpu"]


def _build(ws: Workspace, common: list, cache: Path, n: int) -> dict:
    build = ws.runner.module(f"scale-{n}-cache-build", "evaluate", "cache", "build", "--cache-dir", cache,
                             "--overwrite", *common, timeout=4 * 3600, per_process=True)
    build = slim(build)
    build["cache_bytes"] = folder_bytes(cache) if cache.is_dir() else None
    progress(f"  {n}-cache-build: exit {build['rc']}, {build['wall_s']:.1f} s, {fmt(build['cache_bytes'], ',')} "
             f"bytes, peak RSS {_peaks(build)}")
    return build


def measure_size(ws: Workspace, config: str, pth: Path, hf: Path, data: Path, n: int, cache: Path) -> dict:
    """Every pass of one size; the cache is removed once measured (50,000 images: 7 GiB)."""
    common = _common(ws, config, hf, data)
    runs: dict = {"images": n}
    runs["first_batch_jpeg"] = _first_batch(ws, f"{n}-first-jpeg", [*common, "--devices", "1"])
    runs["jpeg_1"] = _run(ws, f"{n}-jpeg-1", [*common, "--devices", "1"])
    runs["jpeg_2"] = _run(ws, f"{n}-jpeg-2", [*common, "--devices", "2", "--strategy", "ddp"])
    runs["cache_build"] = _build(ws, common, cache, n)
    runs["cache_bytes"] = runs["cache_build"]["cache_bytes"]
    cached = [*common, "--cache-dir", cache]
    runs["first_batch_cache"] = _first_batch(ws, f"{n}-first-cache", [*cached, "--devices", "1"])
    runs["cache_1"] = _run(ws, f"{n}-cache-1", [*cached, "--devices", "1"])
    runs["cache_2"] = _run(ws, f"{n}-cache-2", [*cached, "--devices", "2", "--strategy", "ddp"])
    runs["reference"] = reference_saving(ws, config, pth, hf, data, n, cache)
    shutil.rmtree(cache, ignore_errors=True)
    return runs


def reference_saving(ws: Workspace, config: str, pth: Path, hf: Path, data: Path, n: int, cache: Path) -> dict:
    """The cached pass with the original on every image and on the paired checks' sample only
    (``--reference-sample``): the saving is 1 - the second wall over the first."""
    common = _common(ws, config, hf, data)
    out: dict = {"images": n}
    cached = [*common, "--cache-dir", cache, "--devices", "1", "--reference", pth]
    out["reference_all"] = _run(ws, f"{n}-ref-all", cached)
    out["reference_sample"] = _run(ws, f"{n}-ref-sample", [*cached, "--reference-sample"])
    a, b = out["reference_all"]["wall_s"], out["reference_sample"]["wall_s"]
    out["saving"] = round(1 - b / a, 4) if out["reference_sample"]["rc"] in (0, 1, 3) and a else None
    return out


def summary(sizes: list[dict]) -> dict:
    """Per pass: wall seconds per image at each size and the slopes of wall time and of each role's peak RSS."""
    ns = [s["images"] for s in sizes]
    out: dict = {"images": ns}
    for name in PASSES:
        recs = [s.get(name) or {} for s in sizes]
        walls = [r.get("wall_s") for r in recs]
        roles: dict = {}
        for r in recs:
            for proc in r.get("processes") or []:
                if not proc["role"].startswith("other"):  # a helper program a rank ran: no slope to speak of
                    roles.setdefault(proc["role"], []).append(proc["peak_rss_mib"])
        peak = {role: max(v) for role, v in roles.items()}
        by_role = {role: [max((q["peak_rss_mib"] for q in (r.get("processes") or []) if q["role"] == role),
                              default=None) for r in recs] for role in peak}
        out[name] = {
            "wall_s": walls,
            "seconds_per_image": [w / n if isinstance(w, (int, float)) else None for w, n in zip(walls, ns)],
            "wall_slope_s_per_image": slope(ns, walls),
            "peak_rss_mib_by_role": by_role,
            "rss_slope_kib_per_image": {role: (None if slope(ns, v) is None else round(slope(ns, v) * 1024, 3))
                                        for role, v in by_role.items()},
            "report_bytes": [r.get("report_bytes") for r in recs],
        }
    refs = [s.get("reference") or {} for s in sizes]
    out["reference"] = {"all_wall_s": [(r.get("reference_all") or {}).get("wall_s") for r in refs],
                        "sample_wall_s": [(r.get("reference_sample") or {}).get("wall_s") for r in refs],
                        "sample_images": [((r.get("reference_sample") or {}).get("reference_sample") or {}).get("images")
                                          for r in refs],
                        "saving": [r.get("saving") for r in refs]}
    out["cache_bytes"] = [s.get("cache_bytes") for s in sizes]
    out["cache_slope_bytes_per_image"] = slope(ns, out["cache_bytes"])
    for kind in ("jpeg", "cache"):
        firsts = [(s.get(f"first_batch_{kind}") or {}).get("marks") or {} for s in sizes]
        out[f"first_batch_{kind}"] = {"seconds": [f.get("first_batch_s") for f in firsts],
                                      "inputs_s": [f.get("inputs_s") for f in firsts],
                                      "inputs_slope_ms_per_image": (None if slope(ns, [f.get("inputs_s") for f in firsts])
                                                                    is None else 1000 * slope(ns, [f.get("inputs_s")
                                                                                                   for f in firsts]))}
    return out


def run(ws: Workspace, sections: dict) -> dict:
    from benchmarks.synthetic.imagenet_scale import ensure_scale_set, linked_set

    p = ws.plan
    root = Path(p.scale_data) if p.scale_data else ws.work.parent / "cvt-bench-scale"
    root.mkdir(parents=True, exist_ok=True)
    config, pth, hf = _model(ws, ws.work)
    sizes, made = [], {}
    for per_class in p.scale_per_class:
        t0 = time.perf_counter()
        made = ensure_scale_set(root / "images", per_class, workers=max(1, p.num_workers), classes=p.scale_classes,
                                log=progress)
        data = linked_set(root / "images", root / f"set-{per_class}", per_class, classes=p.scale_classes)
        n = per_class * p.scale_classes
        progress(f"size {n}: data ready in {time.perf_counter() - t0:.0f} s")
        sizes.append(measure_size(ws, config, pth, hf, data, n, ws.work / f"scale-cache-{n}"))
        (root / "partial.json").write_text(json.dumps({"sizes": sizes, "summary": summary(sizes)}, default=str))
    return {"description": "the whole path on an ImageNet-shaped set (1,000 WordNet-id folders, typical sizes) at "
                           "each size; a small CvT at 224 (scale-small: tiny-imagenet.yaml with a stage-1 stride of "
                           f"8, random weights); batch size {p.batch_size}, {p.num_workers} DataLoader workers per "
                           "process", "data": str(root), "set": made, "model": config, "sizes": sizes,
            "summary": summary(sizes)}


def _mib(v) -> str:
    return fmt(v / 2**20 if isinstance(v, (int, float)) else None, ".1f")


def rows(results: dict) -> list[dict]:
    s = results["sections"][KEY]["summary"]
    out = []
    if s:
        for name in PASSES:
            d = s[name]
            rss = "; ".join(f"{r} " + "/".join(fmt(x, ".0f") for x in v) for r, v in d["peak_rss_mib_by_role"].items())
            slopes = ", ".join(f"{r} {fmt(v, '.3f')}" for r, v in d["rss_slope_kib_per_image"].items())
            out.append(row("7", f"scale {name.replace('_', ' ')}",
                           "wall " + "/".join(fmt(w, ".0f") for w in d["wall_s"]) + " s; peak RSS MiB " + rss
                           + "; report " + "/".join(_mib(b) for b in d["report_bytes"]) + " MiB",
                           f"{fmt(d['wall_slope_s_per_image'], '.2e')} s/img; RSS KiB/img {slopes}", "flat", "-"))
        fj, fc = s["first_batch_jpeg"], s["first_batch_cache"]
        out.append(row("7", "scale: to the first image scored",
                       "JPEG " + "/".join(fmt(v, ".1f") for v in fj["seconds"]) + " s (walk+labels+sampling "
                       + "/".join(fmt(v, ".2f") for v in fj["inputs_s"]) + " s); cache "
                       + "/".join(fmt(v, ".1f") for v in fc["seconds"]) + " s",
                       f"{fmt(fj['inputs_slope_ms_per_image'], '.3f')} ms/img", "linear", "-"))
        out.append(row("7", "scale: cache on disk",
                       "cache " + "/".join(_mib(b) for b in s["cache_bytes"]) + " MiB",
                       f"{fmt(s['cache_slope_bytes_per_image'], ',.0f')} B/img", "-", "-"))
        out.append(row("7", "scale: sizes", "/".join(f"{n:,}" for n in s["images"]) + " images", "-", "-", "-"))
        r = s["reference"]
        out.append(row("7", "scale: --reference vs --reference-sample (cache)",
                       "every image " + "/".join(fmt(v, ".0f") for v in r["all_wall_s"]) + " s; sample of "
                       + "/".join(fmt(v, "d") for v in r["sample_images"]) + ": "
                       + "/".join(fmt(v, ".0f") for v in r["sample_wall_s"]) + " s",
                       "saves " + "/".join(fmt(v, ".2f") for v in r["saving"]), "-", "-"))
    return out


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["scale"]))
