"""Shared timing helpers of the benchmarks: the process runner, the bare model loop, medians and ratios, targets,
disturbance.

Every timed command runs as its own process under :mod:`benchmarks.measure` (wall time, peak RSS, CPU time);
the harness's throughput comes from the ``images_per_second`` its report.json records. A ratio is always kept
with its numerator and denominator, so results.json shows what it was computed from.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TARGETS = {
    "harness_overhead": (">=", 0.90),
    "cache_speedup": (">=", 10.0),
    "conversion_wall": ("<=", 1.5),
    "conversion_rss": ("<=", 1.5),
    "sdpa_max_abs_logit_diff": ("<=", 1e-5),
    "cache_stat_s": ("<=", 1.0),
    "startup_refusal": ("<=", 1.5),
}


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def ratio(numerator, denominator) -> dict:
    """{"numerator", "denominator", "value" = numerator / denominator (None when not computable)}."""
    ok = isinstance(numerator, (int, float)) and isinstance(denominator, (int, float)) and denominator != 0
    return {"numerator": numerator, "denominator": denominator, "value": numerator / denominator if ok else None}


def met(value, target: str):
    """Whether ``value`` meets the target named ``target`` (None when there is no value)."""
    if not isinstance(value, (int, float)):
        return None
    op, bound = TARGETS[target]
    return value >= bound if op == ">=" else value <= bound


def target_dict(name: str) -> dict:
    op, bound = TARGETS[name]
    return {"op": op, "value": bound}


def fmt(v, spec: str, missing: str = "n/a") -> str:
    """``v`` formatted by ``spec``, ``missing`` when it is not a number (right-aligned to the spec's width)."""
    if isinstance(v, (int, float)):
        return format(v, spec)
    width = "".join(c for c in spec.split(".")[0] if c.isdigit())
    return missing.rjust(int(width) if width else 0)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def first(runs, get):
    """``get(run)`` of the first run it works on (None if none)."""
    for r in runs:
        try:
            return get(r)
        except (KeyError, TypeError, IndexError):
            continue
    return None


def cpu_times() -> dict:
    """Busy CPU seconds of the whole machine, and those of this process and its waited-for children."""
    import resource

    busy = None
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest is already in user)
        busy = (vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)) / os.sysconf(
            "SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    own = sum(ru.ru_utime + ru.ru_stime for ru in map(resource.getrusage,
                                                         (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
    return {"machine_busy_s": busy, "own_s": own, "t": time.perf_counter(), "loadavg": list(os.getloadavg())}


def disturbance(start: dict, end: dict) -> dict:
    """CPU time other processes used between two :func:`cpu_times` (machine busy time minus ours)."""
    wall = end["t"] - start["t"]
    foreign = None
    if start["machine_busy_s"] is not None and end["machine_busy_s"] is not None:
        foreign = max(0.0, (end["machine_busy_s"] - start["machine_busy_s"]) - (end["own_s"] - start["own_s"]))
    share = foreign / (wall * (os.cpu_count() or 1)) if foreign is not None and wall > 0 else None
    return {"wall_s": round(wall, 2), "loadavg_before": start["loadavg"], "loadavg_after": end["loadavg"],
            "foreign_cpu_s": None if foreign is None else round(foreign, 2),
            "foreign_cpu_share": None if share is None else round(share, 4)}


def slim(rec: dict) -> dict:
    """A run record for results.json (no full stdout)."""
    return {k: v for k, v in rec.items() if k != "stdout"}


class ProcessRunner:
    """Runs commands as measured subprocesses (see :mod:`benchmarks.measure`); logs go to ``work/logs``."""

    def __init__(self, work: Path, verbose: bool = False):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.verbose = verbose
        self.count = 0
        env = dict(os.environ)
        env["HF_HUB_OFFLINE"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.env = env

    def module(self, name: str, module: str, *args, **kw) -> dict:
        """:meth:`run` of ``python -m module args...``."""
        return self.run(name, [sys.executable, "-m", module, *args], **kw)

    def run(self, name: str, cmd: list, timeout: float = 1800, cwd: Path | None = None,
            env: dict | None = None, per_process: bool = False) -> dict:
        """Run ``cmd`` to its end (killed with its process group after ``timeout`` s); its measured record.
        ``per_process``: also the peak RSS of each of its processes (``processes``, :mod:`benchmarks.proc_peaks`)."""
        self.count += 1
        cmd = [str(c) for c in cmd]
        if not os.path.isabs(cmd[0]):
            cmd[0] = shutil.which(cmd[0]) or cmd[0]
        stem = self.logs / f"{self.count:03d}-{name}"
        out_path, err_path, usage_path = stem.with_suffix(".out"), stem.with_suffix(".err"), stem.with_suffix(".usage")
        if self.verbose:
            progress(f"  $ {' '.join(cmd)}")
        t0 = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, "-S", "-m", "benchmarks.measure", str(usage_path), *cmd],
                                    cwd=str(cwd or self.work), env={**self.env, **(env or {})}, stdout=out,
                                    stderr=err, start_new_session=True)
            killed = []
            peaks = None
            if per_process:
                from .proc_peaks import TreePeaks

                peaks = TreePeaks(proc.pid).start()

            def kill():
                killed.append(True)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                proc.wait()
            except BaseException:
                kill()
                proc.wait()
                raise
            finally:
                timer.cancel()
                if peaks is not None:
                    peaks.stop()
        outer_wall = time.perf_counter() - t0
        try:
            rc, wall, maxrss_kib, cpu, orphans = (float(v) for v in usage_path.read_text().split())
            rc, orphans = int(rc), int(orphans)
        except (OSError, ValueError):  # killed (timeout) before measure could write
            rc, wall, maxrss_kib, cpu, orphans = proc.returncode, outer_wall, None, None, None
        return {
            "name": name,
            "cmd": cmd,
            "rc": rc,
            "timed_out": bool(killed),
            "wall_s": round(wall, 3),  # the command alone, fork to exit (measure's own start not included)
            "peak_rss_mib": None if maxrss_kib is None else round(maxrss_kib / 1024, 1),  # KiB on Linux
            "cpu_s": None if cpu is None else round(cpu, 2),  # the command and every descendant
            "orphans_reaped": orphans,
            "stdout": out_path.read_text(errors="replace"),
            "stderr_tail": err_path.read_text(errors="replace")[-1500:],
            "log": str(err_path),
            **({"processes": peaks.processes()} if peaks is not None else {}),
        }


def time_loop(model_dir: str, img_size: int, images: int, batch_sizes: list[int], passes: int = 1,
              warmup_batches: int = 0, attention: str = "einsum", precision: str = "32-true",
              compile: bool = False, compare: bool = False, device: str = "cpu", tf32: bool = False,
              timed=contextlib.nullcontext) -> dict:
    """``model(pixel_values)`` of the converted ``model_dir`` on pre-made float32 tensors: per batch size,
    ``warmup_batches`` untimed batches, then ``passes`` timed passes over ``images`` images in batches of that
    size (the last one smaller, as a DataLoader's); images per second of every pass (and, with ``compare``, the
    max |logit diff| of SDPA vs einsum and of bf16 autocast vs float32 on one batch). ``tf32``: TF32 float32
    matmuls (as ``--tf32``); ``timed()`` is entered around each timed pass (the GPU check counts host-device
    synchronisations there). The loop of ``python -m benchmarks.bare_loop`` and of the GPU check's bare cells."""
    import torch

    import cvt_port
    from cvt_port.attention import set_attention
    from evaluate.runtime.numerics import float32_mode

    dev = torch.device(device)
    t0 = time.perf_counter()
    model = set_attention(cvt_port.load_model(model_dir), attention).to(dev)
    out = {"threads": torch.get_num_threads(), "load_s": round(time.perf_counter() - t0, 3), "attention": attention,
           "precision": precision, "compile": compile, "device": str(dev), "batch_sizes": {}}
    fn = torch.compile(model) if compile else model

    def autocast():
        if precision == "bf16-mixed":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)
    shape = (3, img_size, img_size)
    for bs in batch_sizes:
        n = max(images, bs)  # at least one full batch of every size
        sizes = [bs] * (n // bs) + ([n % bs] if n % bs else [])
        batches = [torch.randn(k, *shape, generator=g).to(dev) for k in sizes]
        rec = {"images": n, "batches": sizes, "pass_s": [], "pass_ips": []}
        with float32_mode(tf32), torch.inference_mode(), autocast():
            t = time.perf_counter()
            for _ in range(warmup_batches):
                fn(pixel_values=batches[0]).logits.float()
            sync()
            rec["warmup_s"] = round(time.perf_counter() - t, 3)
            for _ in range(passes):
                with timed():
                    t = time.perf_counter()
                    for x in batches:
                        fn(pixel_values=x).logits.float()
                sync()
                dt = time.perf_counter() - t
                rec["pass_s"].append(round(dt, 4))
                rec["pass_ips"].append(n / dt)
        out["batch_sizes"][str(bs)] = rec

    if compare:
        x = torch.randn(min(8, images), *shape, generator=torch.Generator().manual_seed(1)).to(dev)
        with torch.inference_mode():
            set_attention(model, "einsum")
            ref = model(pixel_values=x).logits.float()
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                bf16 = model(pixel_values=x).logits.float()
            set_attention(model, "sdpa")
            sdpa = model(pixel_values=x).logits.float()
            set_attention(model, attention)
        out["compare"] = {
            "images": int(x.shape[0]),
            "sdpa_vs_einsum_max_abs_logit_diff": float((sdpa - ref).abs().max()),
            "bf16_vs_fp32_max_abs_logit_diff": float((bf16 - ref).abs().max()),
            "bf16_vs_fp32_top1_agreement": float((bf16.argmax(-1) == ref.argmax(-1)).float().mean()),
            "max_abs_logit": float(ref.abs().max()),
        }
    return out
