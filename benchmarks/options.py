"""Precision, attention and compile options of ``python -m evaluate``: what they buy and what they cost.

Each option through the harness (CPU, 1 process, the plan's workers, JPEG path): ``--precision bf16-mixed``,
``--attention sdpa`` (target: max |logit diff| vs the original at most 1e-5) and ``--compile``, speed-ups over
the harness-overhead benchmark's float32 einsum runs, exactness from ``--reference`` runs (the converted model
vs the original .pth, same batches); and the same options on a GPU when there is one. Reads the
harness-overhead benchmark's runs. ``python -m benchmarks.options`` runs it (and that one) alone.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from .report import fr, row, yn
from .timing import first, fmt, met, median, ratio, target_dict
from .workspace import Workspace, harness_ips

KEY = "4_options"
NEEDS = ("harness_overhead",)


def top1_agreement(a: Path, b: Path) -> float | None:
    """Share of the images two predictions.csv files give the same top-1 class."""
    try:
        with open(a, newline="") as fa, open(b, newline="") as fb:
            ra = {r["image_id"]: r["pred1"] for r in csv.DictReader(fa)}
            rb = {r["image_id"]: r["pred1"] for r in csv.DictReader(fb)}
    except (OSError, KeyError):
        return None
    common = set(ra) & set(rb)
    return sum(ra[k] == rb[k] for k in common) / len(common) if common else None


def _option_runs(ws: Workspace, tag: str, flags: tuple) -> tuple[list[dict], dict]:
    """(speed runs, one --reference run) of a harness option; with --tiny one run with --reference serves for
    both, to save process starts."""
    if ws.plan.tiny:
        ref = ws.harness(f"s4-{tag}-ref", *flags, reference=True)
        return [ref], ref
    runs = [ws.harness(f"s4-{tag}-r{r}", *flags) for r in range(ws.plan.repeats)]
    return runs, ws.harness(f"s4-ref-{tag}", *flags, subset=ws.plan.reference_subset, reference=True)


def _compile(ws: Workspace, s1: dict) -> dict:
    p, fp32 = ws.plan, s1["harness"]["median"]
    # each compiling process gets an empty inductor cache: compile times are those of a first run
    run = ws.harness("s4-compile", "--compile", timeout=2400,
                     env={"TORCHINDUCTOR_CACHE_DIR": str(ws.work / "inductor-harness")})
    bare = ws.bare("s4-compile", batch_sizes=[p.batch_size], images=p.images, passes=2, compile=True, timeout=2400,
                   env={"TORCHINDUCTOR_CACHE_DIR": str(ws.work / "inductor-bare")})
    passes = first([bare], lambda r: r["result"]["batch_sizes"][str(p.batch_size)])
    first_s, steady_s, steady = ((passes["pass_s"][0], passes["pass_s"][1], passes["pass_ips"][1])
                                 if passes and len(passes["pass_s"]) > 1 else (None, None, None))
    return {
        "measured": True,
        "harness_run": run,
        "harness_images_per_second": run.get("images_per_second"),
        "harness_wall_s": run["wall_s"],
        "fp32_harness_median_wall_s": s1["harness"]["median_wall_s"],
        "harness_speedup_vs_fp32": ratio(run.get("images_per_second"), fp32),
        "harness_wall_ratio_vs_fp32": ratio(run["wall_s"], s1["harness"]["median_wall_s"]),
        "note": "the harness's images_per_second includes compilation: torch.compile compiles on the first batch, "
                "inside the timed validation epoch; the bare compiled loop gives the steady state (second pass) and "
                "the compile cost (first pass minus a steady pass)",
        "bare_run": bare,
        "bare_first_pass_s": first_s,
        "bare_steady_images_per_second": steady,
        "bare_compile_s_estimate": first_s - steady_s if first_s is not None else None,
        "bare_eager_warm_images_per_second": s1["bare"]["median_warm"],
        "bare_steady_speedup_vs_eager": ratio(steady, s1["bare"]["median_warm"]),
    }


def _gpu(ws: Workspace):
    import torch

    if not torch.cuda.is_available():
        return "no GPU"
    gpu = {"device": torch.cuda.get_device_name(0)}
    for name, extra in (("fp32", []), ("bf16_mixed", ["--precision", "bf16-mixed"]),
                        ("sdpa", ["--attention", "sdpa"]), ("compile", ["--compile"])):
        if name == "compile" and not ws.plan.compile:
            continue
        rec = ws.harness(f"s4-gpu-{name}", *extra, accelerator="gpu")
        gpu[name] = {"run": rec, "images_per_second": rec.get("images_per_second")}
    for name in ("bf16_mixed", "sdpa", "compile"):
        if name in gpu:
            gpu[name]["speedup_vs_fp32"] = ratio(gpu[name]["images_per_second"], gpu["fp32"]["images_per_second"])
    return gpu


def run(ws: Workspace, sections: dict) -> dict:
    p, s1 = ws.plan, sections["1_harness_overhead"]
    fp32, sub = s1["harness"]["median"], p.reference_subset
    out: dict = {"description": "each option through python -m evaluate (CPU, 1 process, --num-workers of the plan, "
                                "JPEG path); speed-ups are over the float32 einsum harness runs of 1_harness_overhead; "
                                "exactness from --reference runs (the converted model vs the original .pth, same "
                                "batches) on " + (f"a {sub}-image subset" if sub else "all images"),
                 "fp32_einsum_images_per_second": fp32}
    ref_einsum = ws.harness("s4-ref-fp32-einsum", subset=sub, reference=True)  # the default path's exactness
    compare = first(s1["bare"]["runs"], lambda r: r["result"]["compare"]) or {}

    bf16, ref_bf16 = _option_runs(ws, "bf16", ("--precision", "bf16-mixed"))
    bf16_med = median(harness_ips(bf16))
    out["bf16_mixed"] = {
        "runs": bf16, "images_per_second": harness_ips(bf16), "median": bf16_med,
        "speedup_vs_fp32": ratio(bf16_med, fp32),
        "reference_run": ref_bf16,
        "agreement_with_original": ref_bf16.get("agreement"),
        "max_abs_logit_diff_vs_original": ref_bf16.get("max_abs_logit_diff"),
        "note": "the original always runs in float32 outside autocast, so the --reference figures compare bf16 with "
                "the float32 original; top1_agreement_with_fp32_run compares the predictions.csv of a bf16 run with "
                "a float32 run, and the bare figures bf16 autocast with float32 logits",
        "top1_agreement_with_fp32_run": top1_agreement(Path(s1["harness"]["runs"][0]["output"]) / "predictions.csv",
                                                       Path(bf16[0]["output"]) / "predictions.csv"),
        "bare_bf16_vs_fp32_max_abs_logit_diff": compare.get("bf16_vs_fp32_max_abs_logit_diff"),
        "bare_bf16_vs_fp32_top1_agreement": compare.get("bf16_vs_fp32_top1_agreement"),
    }

    sdpa, ref_sdpa = _option_runs(ws, "sdpa", ("--attention", "sdpa"))
    sdpa_med, diff = median(harness_ips(sdpa)), ref_sdpa.get("max_abs_logit_diff")
    out["sdpa"] = {
        "runs": sdpa, "images_per_second": harness_ips(sdpa), "median": sdpa_med,
        "speedup_vs_einsum": ratio(sdpa_med, fp32),
        "reference_run": ref_sdpa, "reference_run_einsum": ref_einsum,
        "max_abs_logit_diff_vs_original": diff,
        "einsum_max_abs_logit_diff_vs_original": ref_einsum.get("max_abs_logit_diff"),
        "agreement_with_original": ref_sdpa.get("agreement"),
        "bare_sdpa_vs_einsum_max_abs_logit_diff": compare.get("sdpa_vs_einsum_max_abs_logit_diff"),
        "target": target_dict("sdpa_max_abs_logit_diff"),
        "met": met(diff, "sdpa_max_abs_logit_diff"),
    }
    out["compile"] = _compile(ws, s1) if p.compile else {"measured": False, "note": "skipped (--tiny or --no-compile)"}
    out["gpu"] = _gpu(ws)
    return out


def rows(results: dict) -> list[dict]:
    s4 = results["sections"][KEY]
    bf, c, sd, gpu = s4["bf16_mixed"], s4["compile"], s4["sdpa"], s4["gpu"]
    fp32 = fmt(s4["fp32_einsum_images_per_second"], ".2f")
    out = [row("4", "--precision bf16-mixed (CPU)",
               f"{fmt(bf['median'], '.2f')} img/s vs fp32 {fp32}; "
               f"agreement {fmt(bf['agreement_with_original'], '.3f')}, "
               f"max|dlogit| {fmt(bf['max_abs_logit_diff_vs_original'], '.2g')} vs the float32 original; top-1 = fp32 "
               f"run on {fmt(bf['top1_agreement_with_fp32_run'], '.3f')}",
               fr(bf["speedup_vs_fp32"], ".2f", "x"), "(effect)", "-")]
    if c.get("measured"):
        out.append(row("4", "--compile (CPU)",
                       f"harness {fmt(c['harness_images_per_second'], '.2f')} img/s after the first batch, whole run "
                       f"{c['harness_wall_s']:.0f} s vs {fmt(c['fp32_harness_median_wall_s'], '.0f')} s; bare steady "
                       f"{fmt(c['bare_steady_images_per_second'], '.2f')} vs eager "
                       f"{fmt(c['bare_eager_warm_images_per_second'], '.2f')} img/s (compile "
                       f"~{fmt(c['bare_compile_s_estimate'], '.0f')} s)",
                       fr(c["bare_steady_speedup_vs_eager"], ".2f", "x (steady)"), "(effect)", "-"))
    else:
        out.append(row("4", "--compile (CPU)", c["note"], "-", "(effect)", "-"))
    out.append(row("4", "--attention sdpa (CPU)",
                   f"{fmt(sd['median'], '.2f')} img/s vs einsum {fp32}; max|dlogit| vs original "
                   f"{fmt(sd['max_abs_logit_diff_vs_original'], '.2g')} (einsum "
                   f"{fmt(sd['einsum_max_abs_logit_diff_vs_original'], '.2g')}; sdpa-einsum "
                   f"{fmt(sd['bare_sdpa_vs_einsum_max_abs_logit_diff'], '.2g')})",
                   fr(sd["speedup_vs_einsum"], ".2f", "x"), "diff <= 1e-05", yn(sd["met"])))
    if isinstance(gpu, str):
        out.append(row("4", "options on GPU", gpu, "-", "-", "-"))
    else:
        parts = [f"{k} {fmt(gpu[k]['images_per_second'], '.1f')}" for k in ("fp32", "bf16_mixed", "sdpa", "compile")
                 if k in gpu]
        out.append(row("4", f"options on GPU ({gpu['device']})", ", ".join(parts) + " img/s", "-", "(effect)", "-"))
    return out


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["options"]))
