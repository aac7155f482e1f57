"""``--compile`` on the CPU against the eager harness, CvT-13 float32, in one run (issue 26.2).

Two ``python -m evaluate`` runs of a random CvT-13 (release format, converted; the figures are about speed and
exactness) with its original (``--reference``: a gate's two forwards per image) on the same photos, batch size and
workers: eager, then ``--compile`` (an empty inductor cache: the cost of a first run). The compiled run compiles
every model, the original too, before the pass and prints the cost (``torch.compile: N s before the pass``), so
its ``images_per_second`` is the compiled rate. Figures: the ratio of the two rates (target: at least 1.25x), the
compile's cost and the number of images above which the compiled run is the shorter one (cost / (1/eager -
1/compiled) images), top-1 of both models identical image by image to the eager run's, and the compiled pair's
max |logit diff| (target: within the gate's float32 tolerance, 1e-5). ``python -m benchmarks compile_cpu``;
``--tiny`` skips it unless ``--compile`` is given (a tiny model at 64x64 then).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from .report import fr, row, yn
from .timing import fmt, progress, ratio, slim
from .workspace import Workspace, link_photos, tiny_config

KEY = "8_compile"
NEEDS: tuple[str, ...] = ()
USES_MODEL = False  # its own CvT-13 (and original)
TOLERANCE = 1e-5  # the conversion's parity tolerance: float32 rounding, nothing more
COST = re.compile(r"torch\.compile: (\d+(?:\.\d+)?) s before the pass")


def _predictions(out: Path) -> dict | None:
    try:
        with open(out / "predictions.csv", newline="") as fh:
            return {r["image_id"]: (r["pred1"], r.get("reference_top1")) for r in csv.DictReader(fh)}
    except OSError:
        return None


def _run(ws: Workspace, tag: str, args: list, *extra) -> dict:
    out = ws.work / "compile-runs" / tag
    env = {"TORCHINDUCTOR_CACHE_DIR": str(ws.work / f"inductor-{tag}")}
    rec = ws.runner.module(f"compile-{tag}", "evaluate", *args, "--output", out, *extra, timeout=3600, env=env)
    report = out / "report.json"
    data = json.loads(report.read_text()) if report.is_file() else {}
    rec.update({k: data.get(k) for k in ("images_per_second", "pass_seconds", "num_samples", "max_abs_logit_diff",
                                         "agreement", "compile", "gate")})
    cost = COST.search(Path(rec["log"]).read_text(errors="replace")) if rec.get("log") else None
    rec["compile_s"] = float(cost.group(1)) if cost else None
    rec["output"] = str(out)
    progress(f"  {tag}: exit {rec['rc']}, {rec['wall_s']:.1f} s, {fmt(rec.get('images_per_second'), '.2f')} img/s, "
             f"compile {fmt(rec['compile_s'], '.1f')} s")
    return slim(rec)


def run(ws: Workspace, sections: dict) -> dict:
    import cvt_port
    from cvt_port.variants import get_variant
    from benchmarks.synthetic.checkpoints import save_release_checkpoint

    p = ws.plan
    if not p.compile:
        return {"measured": False, "note": "skipped (--tiny or --no-compile)"}
    models = ws.work / "compile-models"
    models.mkdir(parents=True, exist_ok=True)
    config = str(tiny_config(models)) if p.tiny else "cvt-13-224"
    pth = models / ("tiny.pth" if p.tiny else get_variant(config).release_file)
    save_release_checkpoint(get_variant(config), pth, seed=0)
    hf = cvt_port.convert(pth, models / "hf", variant=config, overwrite=True, log=lambda m: None)
    photos = link_photos(ws.photos_src, p.images, ws.work / "compile-photos")
    args = ["--model", hf, "--config", config, "--data", photos, "--reference", pth, "--batch-size", p.batch_size,
            "--num-workers", p.num_workers, "--accelerator", "cpu", "--devices", "1"]
    eager = _run(ws, "eager", args)
    compiled = _run(ws, "compiled", args, "--compile")
    a, b = _predictions(Path(eager["output"])), _predictions(Path(compiled["output"]))
    same = a is not None and a == b and len(a) == p.images
    speed = ratio(compiled.get("images_per_second"), eager.get("images_per_second"))
    cost, e, c = compiled["compile_s"], eager.get("images_per_second"), compiled.get("images_per_second")
    saved = (1 / e - 1 / c) if isinstance(e, float) and isinstance(c, float) and c > 0 and e > 0 else None
    diff = compiled.get("max_abs_logit_diff")
    return {
        "description": f"python -m evaluate on {p.images} photos, {config} float32 with its original (--reference), "
                       f"batch size {p.batch_size}, {p.num_workers} workers: eager, then --compile (every model, "
                       "the original too, compiled before the pass; a fresh inductor cache)",
        "variant": config, "images": p.images, "eager": eager, "compiled": compiled,
        "speedup": speed, "target": {"op": ">=", "value": 1.25},
        "met": speed["value"] >= 1.25 if speed["value"] is not None else None,
        "compile_s": cost,
        "break_even_images": round(cost / saved) if cost is not None and saved and saved > 0 else None,
        "top1_identical_to_eager": same,
        "compiled_pair_max_abs_logit_diff": diff, "eager_pair_max_abs_logit_diff": eager.get("max_abs_logit_diff"),
        "logits_within_tolerance": diff <= TOLERANCE if isinstance(diff, (int, float)) else None,
        "measured": True,
    }


def rows(results: dict) -> list[dict]:
    s = results["sections"][KEY]
    if not s.get("measured"):
        return [row("8", "--compile vs eager (CPU, CvT-13 fp32)", s["note"], "-", ">= 1.25x", "-")]
    e, c = s["eager"], s["compiled"]
    return [
        row("8", f"--compile vs eager ({s['variant']} fp32, with --reference)",
            f"compiled {fmt(c.get('images_per_second'), '.2f')} img/s / eager {fmt(e.get('images_per_second'), '.2f')} "
            f"img/s; compile {fmt(s['compile_s'], '.0f')} s before the pass; pays off above "
            f"{fmt(s['break_even_images'], ',')} images", fr(s["speedup"], ".2f", "x"), ">= 1.25x", yn(s["met"])),
        row("8", "--compile: same predictions as eager",
            f"top-1 of both models identical to eager on {s['images']} images: "
            f"{str(s['top1_identical_to_eager']).lower()}; compiled converted vs compiled original max|dlogit| "
            f"{fmt(s['compiled_pair_max_abs_logit_diff'], '.2g')} (eager pair "
            f"{fmt(s['eager_pair_max_abs_logit_diff'], '.2g')})", "-", f"<= {TOLERANCE:g}",
            yn(s["logits_within_tolerance"] and s["top1_identical_to_eager"])),
    ]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["compile_cpu"]))
