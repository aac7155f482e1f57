"""Harness overhead: ``python -m evaluate`` throughput on real JPEGs over a bare model loop.

``images_per_second`` of the harness's report.json (decode, resize, batch, forward, metrics; JPEG path, the
plan's workers, no ``--reference``, float32) over ``python -m benchmarks.bare_loop`` (``model(pixel_values)``
on pre-made float32 tensors in a fresh process, same batch size and images). The bare loop's first pass is
cold like the harness's one epoch; the first repeat also times a second, warm pass (information). Target:
the harness keeps at least 0.90 of the bare loop's speed. ``python -m benchmarks.harness_overhead`` runs it alone.
"""

from __future__ import annotations

import sys

from .report import fr, row, yn
from .timing import fmt, met, median, ratio, target_dict
from .workspace import Workspace, bare_ips, harness_ips

KEY = "1_harness_overhead"
NEEDS: tuple[str, ...] = ()


def run(ws: Workspace, sections: dict) -> dict:
    p = ws.plan
    harness, bare = [], []
    for r in range(p.repeats):
        harness.append(ws.harness(f"s1-jpeg-fp32-r{r}"))
        bare.append(ws.bare(f"s1-fp32-r{r}", batch_sizes=[p.batch_size], images=p.images,
                            passes=2 if r == 0 else 1, compare=(r == 0)))
    h = median(harness_ips(harness))
    b_cold = median(bare_ips(bare, p.batch_size, 0))
    b_warm = median(bare_ips(bare, p.batch_size, 1))
    rt = ratio(h, b_cold)
    walls = [r["wall_s"] for r in harness]
    return {
        "description": "python -m evaluate images_per_second (JPEG path, --num-workers of the plan, no --reference) "
                       "over python -m benchmarks.bare_loop: model(pixel_values) on pre-made float32 tensors in a "
                       "fresh process (first pass, cold like the harness's epoch; same batch size and images; the "
                       "first repeat also times a second, warm pass)",
        "images": p.images, "batch_size": p.batch_size, "num_workers": p.num_workers,
        "harness": {"runs": harness, "images_per_second": harness_ips(harness), "median": h,
                    "wall_s": walls, "median_wall_s": median(walls)},
        "bare": {"runs": bare, "threads": next((r["result"]["threads"] for r in bare if r.get("result")), None),
                 "cold_images_per_second": bare_ips(bare, p.batch_size, 0), "median": b_cold,
                 "warm_images_per_second": bare_ips(bare, p.batch_size, 1), "median_warm": b_warm},
        "ratio": rt,
        "ratio_vs_warm_bare": ratio(h, b_warm),
        "target": target_dict("harness_overhead"),
        "met": met(rt["value"], "harness_overhead"),
    }


def rows(results: dict) -> list[dict]:
    s1, s2 = results["sections"][KEY], results["sections"].get("2_cache")
    on_cache = (f"; harness on the cache {fmt(s2['harness_with_cache']['ratio_to_bare']['value'], '.2f')} of bare"
                if s2 else "")
    return [row("1", "harness overhead (JPEG, fp32)",
                f"harness {fmt(s1['harness']['median'], '.2f')} img/s / bare loop {fmt(s1['bare']['median'], '.2f')} "
                f"img/s (bare warm {fmt(s1['bare']['median_warm'], '.2f')}{on_cache})",
                fr(s1["ratio"]), ">= 0.90", yn(s1["met"]))]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["harness_overhead"]))
