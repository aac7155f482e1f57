"""Conversion of a full-size CvT-W24 file (random weights, release format, 1.1 GB) against plain load + save.

Wall time and peak RSS of ``python -m cvt_port convert FILE OUT`` vs ``python -m benchmarks.baseline_convert``
(``torch.load`` + safetensors ``save_file`` of the same tensors), beside ``python -m benchmarks.import_floor``
(torch and transformers' CvT imported, nothing else: the least a converter pays that runs the converted model
to check it). Targets: at most 1.5x the baseline's wall time, peak RSS at most 1.5x the file size.
``python -m benchmarks.conversion`` runs it alone (``--tiny``: a tiny model).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from .report import fr, row, yn
from .timing import fmt, met, median, progress, ratio, slim, target_dict
from .workspace import Workspace

KEY = "3_conversion"
NEEDS: tuple[str, ...] = ()
USES_MODEL = False  # it makes its own checkpoint: the workspace's model and photos are not needed


def _convert(ws: Workspace, r: int, path, variant_flag: list) -> dict:
    out = ws.work / "conversion" / f"hf-r{r}"
    rec = ws.runner.module(f"convert-r{r}", "cvt_port", "convert", path, out, *variant_flag)
    facts = out / "conversion.json"
    if facts.is_file():
        f = json.loads(facts.read_text())
        rec["in_process_wall_time_s"] = f.get("wall_time_s")
        rec["in_process_peak_rss_mib"] = f.get("peak_rss_mib")
        rec["parity_max_abs_logit_diff"] = f.get("parity", {}).get("max_abs_logit_diff")
        rec["output_bytes"] = sum(q.stat().st_size for q in out.iterdir() if q.is_file())
    else:
        ws.notes.append(f"conversion r{r} failed (exit {rec['rc']}): see {rec['log']}")
    shutil.rmtree(out, ignore_errors=True)
    progress(f"  convert r{r}: exit {rec['rc']}, {rec['wall_s']:.1f} s, "
             f"peak RSS {fmt(rec['peak_rss_mib'], '.0f')} MiB")
    return slim(rec)


def _baseline(ws: Workspace, r: int, path) -> dict:
    target = ws.work / "conversion" / f"baseline-r{r}.safetensors"
    rec = ws.runner.module(f"baseline-r{r}", "benchmarks.baseline_convert", path, target)
    rec["output_bytes"] = target.stat().st_size if target.is_file() else None
    target.unlink(missing_ok=True)
    progress(f"  baseline r{r}: exit {rec['rc']}, {rec['wall_s']:.1f} s, "
             f"peak RSS {fmt(rec['peak_rss_mib'], '.0f')} MiB")
    return slim(rec)


def run(ws: Workspace, sections: dict) -> dict:
    from cvt_port.variants import TESTING_CONFIGS_DIR, get_variant
    from benchmarks.synthetic.checkpoints import save_release_checkpoint

    p = ws.plan
    conv_dir = ws.work / "conversion"
    conv_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if p.conversion_variant == "tiny":
        config = str(TESTING_CONFIGS_DIR / "tiny-imagenet.yaml")
        variant, variant_flag, path = get_variant(config), ["--variant", config], conv_dir / "bench-tiny.pth"
    else:
        variant, variant_flag = get_variant(p.conversion_variant), []
        path = conv_dir / variant.release_file
    progress(f"  making {path.name} (random {variant.name}, release format)")
    save_release_checkpoint(variant, path, seed=0)
    make_s = time.perf_counter() - t0
    size = path.stat().st_size
    progress(f"  {size / 2**20:.0f} MiB in {make_s:.1f} s")

    convert, baseline, floor = [], [], []
    for r in range(p.repeats):
        os.sync()  # every timed run starts with no dirty pages from the one before (writeback is shared)
        convert.append(_convert(ws, r, path, variant_flag))
        os.sync()
        baseline.append(_baseline(ws, r, path))
        os.sync()
        floor.append(slim(ws.runner.module(f"import-floor-r{r}", "benchmarks.import_floor")))
        progress(f"  import floor r{r}: exit {floor[-1]['rc']}, {floor[-1]['wall_s']:.1f} s")
    path.unlink(missing_ok=True)

    def ok(runs):
        return [r for r in runs if r["rc"] == 0]

    cw, bw = median([r["wall_s"] for r in ok(convert)]), median([r["wall_s"] for r in ok(baseline)])
    fw = median([r["wall_s"] for r in ok(floor)])
    crss = max([r["peak_rss_mib"] for r in ok(convert)], default=None)
    brss = max([r["peak_rss_mib"] for r in ok(baseline)], default=None)
    size_mib = size / 2**20
    wall, rss = ratio(cw, bw), ratio(crss, size_mib)
    return {
        "description": "wall time of a `python -m cvt_port convert FILE OUT` subprocess vs a `python -m "
                       "benchmarks.baseline_convert` subprocess: torch.load(mmap=True, weights_only=True) + "
                       "safetensors save_file of the same tensors (interpreter and imports in both; os.sync() "
                       "before each run); peak RSS from os.wait4 of each subprocess; the file was just written, so "
                       "it is in the page cache for every run. import_floor: `python -m benchmarks.import_floor`, "
                       "which only imports torch and transformers' CvT model, the least any converter pays that "
                       "runs the converted model to check it",
        "variant": variant.name, "file": path.name, "file_bytes": size, "file_mib": round(size_mib, 1),
        "make_file_s": round(make_s, 2),
        "convert": {"runs": convert, "wall_s": [r["wall_s"] for r in convert], "median_wall_s": cw,
                    "peak_rss_mib": [r["peak_rss_mib"] for r in convert], "max_peak_rss_mib": crss,
                    "in_process_wall_time_s": [r.get("in_process_wall_time_s") for r in convert],
                    "median_in_process_wall_time_s": median([r.get("in_process_wall_time_s") for r in convert])},
        "baseline": {"runs": baseline, "wall_s": [r["wall_s"] for r in baseline], "median_wall_s": bw,
                     "peak_rss_mib": [r["peak_rss_mib"] for r in baseline], "max_peak_rss_mib": brss},
        "import_floor": {"runs": floor, "wall_s": [r["wall_s"] for r in floor], "median_wall_s": fw,
                         "ratio_to_baseline": ratio(fw, bw),
                         "budget_left_at_target_s": round(1.5 * bw - fw, 2) if fw and bw else None,
                         "convert_minus_floor_s": round(cw - fw, 2) if fw and cw else None},
        "wall_ratio": wall, "wall_target": target_dict("conversion_wall"),
        "wall_met": met(wall["value"], "conversion_wall"),
        "rss_ratio": rss, "rss_target": target_dict("conversion_rss"), "rss_met": met(rss["value"], "conversion_rss"),
        "baseline_rss_ratio": ratio(brss, size_mib),
    }


def rows(results: dict) -> list[dict]:
    s3 = results["sections"][KEY]
    c, b, fl = s3["convert"], s3["baseline"], s3["import_floor"]
    return [
        row("3", f"convert {s3['variant']} ({s3['file_mib']:.0f} MiB): wall",
            f"convert {fmt(c['median_wall_s'], '.1f')} s "
            f"(in-process {fmt(c['median_in_process_wall_time_s'], '.1f')} s)"
            f" / baseline load+save_file {fmt(b['median_wall_s'], '.1f')} s",
            fr(s3["wall_ratio"], ".2f", "x"), "<= 1.5x", yn(s3["wall_met"])),
        row("3", "convert: import floor / baseline",
            f"import torch + transformers' CvT only {fmt(fl['median_wall_s'], '.1f')} s; leaves "
            f"{fmt(fl['budget_left_at_target_s'], '.2f')} s of the 1.5x budget; convert spends "
            f"{fmt(fl['convert_minus_floor_s'], '.2f')} s beyond it",
            fr(fl["ratio_to_baseline"], ".2f", "x"), "(bound)", "-"),
        row("3", "convert: peak RSS / file size",
            f"convert {fmt(c['max_peak_rss_mib'], '.0f')} MiB (baseline {fmt(b['max_peak_rss_mib'], '.0f')} MiB) / "
            f"file {s3['file_mib']:.0f} MiB", fr(s3["rss_ratio"], ".2f", "x"), "<= 1.5x", yn(s3["rss_met"])),
    ]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["conversion"]))
