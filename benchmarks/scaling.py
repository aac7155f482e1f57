"""Scaling: 2 CPU processes (DDP) against 1, and the bare loop at batch sizes 1, 8, 32 and 64.

``python -m evaluate --accelerator cpu --devices 2 --strategy ddp`` vs the harness-overhead benchmark's
1-process runs (each process has its own DataLoader workers, and Lightning gives each max(1, cores //
processes) torch threads); the batch sweep runs ``python -m benchmarks.bare_loop`` (the harness sweep would
cost a full run per size). ``python -m benchmarks.scaling`` runs it (and the harness overhead) alone.
"""

from __future__ import annotations

import sys

from .report import fr, row
from .timing import fmt, median, ratio
from .workspace import Workspace, harness_ips

KEY = "5_scaling"
NEEDS = ("harness_overhead",)


def run(ws: Workspace, sections: dict) -> dict:
    p, s1 = ws.plan, sections["1_harness_overhead"]
    ddp = [ws.harness(f"s5-ddp2-r{r}", "--strategy", "ddp", devices="2") for r in range(p.ddp_repeats)]
    ddp_med, one = median(harness_ips(ddp)), s1["harness"]["median"]
    sweep_run = ws.bare("s5-batch-sweep", batch_sizes=p.sweep_batch_sizes, images=p.sweep_images,
                        passes=p.sweep_repeats, warmup_batches=1)
    res = sweep_run.get("result")
    sweep = {}
    for bs in p.sweep_batch_sizes:
        passes = res["batch_sizes"][str(bs)]["pass_ips"] if res else []
        sweep[str(bs)] = {"images_per_second": passes, "median": median(passes)}
    best = max((v["median"] for v in sweep.values() if v["median"]), default=None)
    for v in sweep.values():
        v["relative_to_best"] = ratio(v["median"], best)
    return {
        "processes": {
            "description": "python -m evaluate --accelerator cpu --devices 2 --strategy ddp vs --devices 1 "
                           "(1_harness_overhead's runs); each process has its own DataLoader workers and "
                           "Lightning gives each max(1, cores // processes) torch threads",
            "devices_1": {"images_per_second": s1["harness"]["images_per_second"], "median": one},
            "devices_2_ddp": {"runs": ddp, "images_per_second": harness_ips(ddp), "median": ddp_med,
                              "world_size": [r.get("world_size") for r in ddp],
                              "num_samples": [r.get("num_samples") for r in ddp]},
            "ratio": ratio(ddp_med, one),
        },
        "batch_sizes": {
            "description": "python -m benchmarks.bare_loop (float32, einsum, fresh subprocess, one untimed warm-up "
                           f"batch per size, {p.sweep_images} images per pass, {p.sweep_repeats} pass(es) per size)",
            "loop": "bare",
            "run": sweep_run,
            "results": sweep,
        },
    }


def rows(results: dict) -> list[dict]:
    pr, sw = results["sections"][KEY]["processes"], results["sections"][KEY]["batch_sizes"]["results"]
    return [
        row("5", "2 CPU processes (DDP) vs 1",
            f"2 procs {fmt(pr['devices_2_ddp']['median'], '.2f')} img/s / "
            f"1 proc {fmt(pr['devices_1']['median'], '.2f')} img/s", fr(pr["ratio"], ".2f", "x"), "(scaling)", "-"),
        row("5", "batch size " + "/".join(sw) + " (bare loop)",
            ", ".join(f"bs {bs}: {fmt(v['median'], '.2f')}" for bs, v in sw.items()) + " img/s",
            "/".join(fr(v["relative_to_best"], ".2f") for v in sw.values()) + " of best", "(scaling)", "-"),
    ]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["scaling"]))
