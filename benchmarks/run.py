"""``python -m benchmarks`` (or ``python benchmarks/run.py``): every performance target, side by side.

One run measures, on this machine and in this order:

1. harness overhead: ``python -m evaluate`` throughput on real JPEGs (decode, resize, batch,
   forward, metrics; ``images_per_second`` of report.json) over a bare ``model(pixel_values)``
   loop on pre-made tensors (fresh subprocess, same batch size, same images, float32);
2. the preprocessed cache: data-path throughput (the harness's DataLoader only, no model) of the
   cache vs the JPEGs, predictions of a cached run byte-identical to the JPEG run, and a cache
   made for other settings refused (exit status 2);
3. conversion of a full-size CvT-W24 file (random weights, release format, 1.1 GB): wall time
   and peak RSS of ``python -m cvt_port convert`` vs a plain ``torch.load`` + ``save_file``
   subprocess;
4. precision and speed options (``--precision bf16-mixed``, ``--compile``, ``--attention sdpa``):
   throughput and what they do to the logits;
5. scaling: 1 vs 2 processes (DDP on CPU) and batch sizes 1, 8, 32, 64.

It prints one table (figures, ratio, target, met) and writes ``benchmarks/results.json`` (every raw
timing, the medians, the ratios, the machine). A missed target is reported, never an error: the
exit status is 0 unless the benchmark itself could not run. ``--tiny`` runs every section on a tiny
model and a few photos (the test suite's configuration).

Models are random-initialised (the figures are about speed and exactness, not accuracy). Photos:
``../shared/data/imagenet-sample-100`` beside the repository (``--photos`` to override); they are
linked into the work folder, never copied into the project.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import filecmp
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

THIS_FILE = Path(__file__).resolve()
REPO = THIS_FILE.parents[1]
if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, str(REPO))

DEFAULT_PHOTOS = THIS_FILE.parents[2] / "shared/data/imagenet-sample-100"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results.json"
SCHEMA = 1

TARGETS = {
    "harness_overhead": (">=", 0.90),
    "cache_speedup": (">=", 10.0),
    "conversion_wall": ("<=", 1.5),
    "conversion_rss": ("<=", 1.5),
    "sdpa_max_abs_logit_diff": ("<=", 1e-5),
}



# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """What one run measures (the defaults are sized for ~15 minutes on 2 CPU cores)."""

    tiny: bool
    repeats: int
    images: int  # images per harness / bare-loop pass (the photos, repeated through links if needed)
    batch_size: int
    reference_subset: int | None  # images of the --reference runs (two models per pass)
    refusal_subset: int
    sweep_batch_sizes: list[int]
    sweep_images: int
    sweep_repeats: int
    ddp_repeats: int
    compile: bool
    conversion_variant: str  # "cvt-w24-384-22k" or "tiny"
    eval_variant: str  # "cvt-13-224" or "tiny"

    @classmethod
    def make(cls, args) -> "Plan":
        if args.tiny:
            plan = cls(tiny=True, repeats=1, images=8, batch_size=4, reference_subset=None, refusal_subset=4,
                       sweep_batch_sizes=[1, 8, 32, 64], sweep_images=8, sweep_repeats=1, ddp_repeats=1,
                       compile=False, conversion_variant="tiny", eval_variant="tiny")
        else:
            plan = cls(tiny=False, repeats=3, images=192, batch_size=32, reference_subset=64, refusal_subset=10,
                       sweep_batch_sizes=[1, 8, 32, 64], sweep_images=64, sweep_repeats=3, ddp_repeats=3,
                       compile=True, conversion_variant="cvt-w24-384-22k", eval_variant="cvt-13-224")
        if args.repeats is not None:
            plan.repeats = plan.ddp_repeats = plan.sweep_repeats = max(1, args.repeats)
        if args.images is not None:
            plan.images = args.images
        if args.batch_size is not None:
            plan.batch_size = args.batch_size
        if args.no_compile:
            plan.compile = False
        if args.compile:
            plan.compile = True
        plan.refusal_subset = min(plan.refusal_subset, max(1, plan.images // 2))
        if plan.reference_subset is not None and plan.reference_subset >= plan.images:
            plan.reference_subset = None
        return plan


# --------------------------------------------------------------------------- small helpers


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def ratio(numerator, denominator) -> dict:
    """{"numerator", "denominator", "value" = numerator / denominator (None when not computable)}."""
    ok = isinstance(numerator, (int, float)) and isinstance(denominator, (int, float)) and denominator != 0
    return {"numerator": numerator, "denominator": denominator, "value": numerator / denominator if ok else None}


def met(value, target: tuple[str, float]):
    if not isinstance(value, (int, float)):
        return None
    op, bound = target
    return value >= bound if op == ">=" else value <= bound


def target_dict(name: str) -> dict:
    op, bound = TARGETS[name]
    return {"op": op, "value": bound}


def cpu_times() -> dict:
    """Busy CPU seconds of the whole machine, and those of this process and its waited-for children."""
    import resource

    busy = None
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()[1:]
        vals = [int(v) for v in parts]
        # user nice system idle iowait irq softirq steal (guest is already in user)
        busy = (vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)) / os.sysconf(
            "SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        own += ru.ru_utime + ru.ru_stime
    return {"machine_busy_s": busy, "own_s": own, "t": time.perf_counter(), "loadavg": list(os.getloadavg())}


def disturbance(start: dict, end: dict) -> dict:
    """CPU time other processes used while a section ran (machine busy time minus ours)."""
    wall = end["t"] - start["t"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    foreign = None
    if start["machine_busy_s"] is not None and end["machine_busy_s"] is not None:
        foreign = max(0.0, (end["machine_busy_s"] - start["machine_busy_s"]) - (end["own_s"] - start["own_s"]))
    share = foreign / (wall * (os.cpu_count() or cores)) if foreign is not None and wall > 0 else None
    return {"wall_s": round(wall, 2), "loadavg_before": start["loadavg"], "loadavg_after": end["loadavg"],
            "foreign_cpu_s": None if foreign is None else round(foreign, 2),
            "foreign_cpu_share": None if share is None else round(share, 4)}


# Started with ``python -S -c`` between us and every measured command: it forks and execs the command and
# reports the command's wall time and rusage (os.wait4). Why a middleman: Linux carries the high-water RSS of
# the memory image a process had before exec() into its ru_maxrss, and a child forked straight from this
# (large) benchmark process would report at least our own RSS; forked from this ~10 MB stub it reports its own.
# RUSAGE_CHILDREN would be wrong as well: it keeps the largest child ever waited for. The stub is also a
# child subreaper, so processes the command leaves behind without waiting for them (Lightning's DDP rank 0
# does not wait for the ranks it launched) are reaped here and their CPU time counted as the run's.
# Wall time: fork to the command's own exit. Peak RSS: the largest single process.
MEASURE_STUB = """\
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
rc = os.waitstatus_to_exitcode(status)
maxrss, cpu, orphans = ru.ru_maxrss, ru.ru_utime + ru.ru_stime, 0
while True:
    try:
        _, _, ru = os.wait4(-1, 0)
    except ChildProcessError:
        break
    orphans += 1
    maxrss, cpu = max(maxrss, ru.ru_maxrss), cpu + ru.ru_utime + ru.ru_stime
with open(out, "w") as fh:
    fh.write("%r %r %r %r %r" % (rc, wall, maxrss, cpu, orphans))
sys.exit(rc if 0 <= rc < 256 else 1)
"""


class Runner:
    """Runs subprocesses with wall time and peak RSS (see :data:`MEASURE_STUB`)."""

    def __init__(self, work: Path, verbose: bool):
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

    def run(self, name: str, cmd: list, timeout: float = 1800, cwd: Path | None = None,
            env: dict | None = None) -> dict:
        self.count += 1
        cmd = [str(c) for c in cmd]
        if not os.path.isabs(cmd[0]):
            cmd[0] = shutil.which(cmd[0]) or cmd[0]
        stem = self.logs / f"{self.count:03d}-{name}"
        out_path, err_path, usage_path = stem.with_suffix(".out"), stem.with_suffix(".err"), stem.with_suffix(".usage")
        if self.verbose:
            print(f"  $ {' '.join(cmd)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, "-S", "-c", MEASURE_STUB, str(usage_path), *cmd],
                                    cwd=str(cwd or self.work), env={**self.env, **(env or {})}, stdout=out,
                                    stderr=err, start_new_session=True)
            killed = []

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
        outer_wall = time.perf_counter() - t0
        try:
            rc, wall, maxrss_kib, cpu, orphans = (float(v) for v in usage_path.read_text().split())
            rc, orphans = int(rc), int(orphans)
        except (OSError, ValueError):  # killed (timeout) before the stub could write
            rc, wall, maxrss_kib, cpu, orphans = proc.returncode, outer_wall, None, None, None
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
        return {
            "name": name,
            "cmd": cmd,
            "rc": rc,
            "timed_out": bool(killed),
            "wall_s": round(wall, 3),  # the command alone, fork to exit (the stub's own start not included)
            "peak_rss_mib": None if maxrss_kib is None else round(maxrss_kib / 1024, 1),  # KiB on Linux
            "cpu_s": None if cpu is None else round(cpu, 2),  # the command and every descendant
            "orphans_reaped": orphans,
            "stdout": stdout,
            "stderr_tail": stderr[-1500:],
            "log": str(err_path),
        }


def slim(rec: dict) -> dict:
    """A run record for results.json (no full stdout)."""
    return {k: v for k, v in rec.items() if k != "stdout"}


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the bare loop (a subprocess)


def bare_main(argv: list[str]) -> int:
    """``run.py _bare``: ``model(pixel_values)`` on pre-made float32 tensors; prints one JSON line.

    Per batch size: ``--warmup-batches`` untimed batches, then ``--passes`` timed passes over
    ``--images`` images in batches of that size (the last one smaller, as a DataLoader's).
    ``--compare``: also the max |logit diff| of SDPA vs einsum (float32) and of bf16 autocast vs
    float32 on one batch.
    """
    p = argparse.ArgumentParser(prog="run.py _bare")
    p.add_argument("--model", required=True)
    p.add_argument("--img-size", type=int, required=True)
    p.add_argument("--images", type=int, required=True, help="images per pass (at least one batch)")
    p.add_argument("--batch-sizes", required=True)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--warmup-batches", type=int, default=0)
    p.add_argument("--attention", default="einsum")
    p.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compare", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    import contextlib

    import torch

    import cvt_port
    from cvt_port.attention import set_attention

    device = torch.device(a.device)
    t0 = time.perf_counter()
    model = set_attention(cvt_port.load_model(a.model), a.attention).to(device)
    out = {"threads": torch.get_num_threads(), "load_s": round(time.perf_counter() - t0, 3),
           "attention": a.attention, "precision": a.precision, "compile": a.compile, "device": str(device),
           "batch_sizes": {}}
    fn = torch.compile(model) if a.compile else model

    def autocast(precision):
        if precision == "bf16-mixed":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)
    shape = (3, a.img_size, a.img_size)
    for bs in [int(v) for v in a.batch_sizes.split(",")]:
        images = max(a.images, bs)  # at least one full batch of every size
        sizes = [bs] * (images // bs) + ([images % bs] if images % bs else [])
        batches = [torch.randn(n, *shape, generator=g).to(device) for n in sizes]
        rec = {"images": images, "batches": sizes, "pass_s": [], "pass_ips": []}
        with torch.inference_mode(), autocast(a.precision):
            t = time.perf_counter()
            for _ in range(a.warmup_batches):
                fn(pixel_values=batches[0]).logits.float()
            sync()
            rec["warmup_s"] = round(time.perf_counter() - t, 3)
            for _ in range(a.passes):
                t = time.perf_counter()
                for x in batches:
                    fn(pixel_values=x).logits.float()
                sync()
                dt = time.perf_counter() - t
                rec["pass_s"].append(round(dt, 4))
                rec["pass_ips"].append(images / dt)
        out["batch_sizes"][str(bs)] = rec

    if a.compare:
        x = torch.randn(min(8, a.images), *shape, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.inference_mode():
            set_attention(model, "einsum")
            ref = model(pixel_values=x).logits.float()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                bf16 = model(pixel_values=x).logits.float()
            set_attention(model, "sdpa")
            sdpa = model(pixel_values=x).logits.float()
            set_attention(model, a.attention)
        out["compare"] = {
            "images": int(x.shape[0]),
            "sdpa_vs_einsum_max_abs_logit_diff": float((sdpa - ref).abs().max()),
            "bf16_vs_fp32_max_abs_logit_diff": float((bf16 - ref).abs().max()),
            "bf16_vs_fp32_top1_agreement": float((bf16.argmax(-1) == ref.argmax(-1)).float().mean()),
            "max_abs_logit": float(ref.abs().max()),
        }
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args, plan: Plan, work: Path, photos: Path):
        self.args, self.plan, self.work, self.photos_src = args, plan, work, photos
        self.runner = Runner(work, args.verbose)
        self.py = sys.executable
        self.notes: list[str] = []
        self.sections: dict[str, dict] = {}
        self.default_workers = self._default_workers()

    # -- setup -------------------------------------------------------------------------------
    @staticmethod
    def _default_workers() -> int:
        from evaluate.cli import build_parser

        return int(build_parser().get_default("num_workers"))

    def setup(self) -> dict:
        import torch
        from transformers.utils import logging as hf_logging

        import cvt_port
        from cvt_port.variants import get_variant

        hf_logging.disable_progress_bar()  # "Writing model shards" bars of save_pretrained
        t0 = time.perf_counter()
        models = self.work / "models"
        models.mkdir(parents=True, exist_ok=True)
        if self.plan.eval_variant == "tiny":
            from cvt_port.variants import TESTING_CONFIGS_DIR

            self.config = str(TESTING_CONFIGS_DIR / "tiny-imagenet.yaml")
            pth = models / "bench-tiny.pth"
        else:
            self.config = self.plan.eval_variant
            pth = models / get_variant(self.plan.eval_variant).release_file
        self.variant = get_variant(self.config)
        self.pth = pth
        save_release_checkpoint(self.variant, pth, seed=0)
        self.hf = cvt_port.convert(pth, models / "hf", variant=self.config, overwrite=True, log=lambda m: None)
        self.img_size = self.variant.preprocessing.img_size
        self.photos = self._link_photos(self.plan.images, self.work / "photos")
        info = {"variant": self.variant.name, "checkpoint": str(pth), "checkpoint_bytes": pth.stat().st_size,
                "converted": str(self.hf), "photos_source": str(self.photos_src), "photos": str(self.photos),
                "images": self.plan.images, "setup_s": round(time.perf_counter() - t0, 2),
                "torch_threads": torch.get_num_threads()}
        return info

    def _link_photos(self, n: int, dest: Path) -> Path:
        """``dest/val/<wnid>/...``: the first ``n`` photos (cycling through them again, under other
        names, when ``n`` exceeds their number) as symbolic links to the originals."""
        from evaluate.layouts import discover

        source = discover(self.photos_src)
        files = sorted(Path(s.ref) for s in source.samples if isinstance(s.ref, str))
        if not files:
            raise SystemExit(f"no photos in {self.photos_src}")
        if dest.exists():
            shutil.rmtree(dest)
        for i in range(n):
            src = files[i % len(files)]
            copy = i // len(files)
            name = src.name if copy == 0 else f"{src.stem}_copy{copy}{src.suffix}"
            target = dest / "val" / src.parent.name / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src.resolve(), target)
        return dest

    # -- running the harness -----------------------------------------------------------------
    def harness(self, tag: str, *extra, subset: int | None = None, reference: bool = False,
                accelerator: str = "cpu", devices: str = "1", timeout: float = 1800, env: dict | None = None) -> dict:
        out = self.work / "runs" / tag
        cmd = [self.py, "-m", "evaluate", "--model", self.hf, "--config", self.config, "--data", self.photos,
               "--batch-size", self.plan.batch_size, "--accelerator", accelerator, "--devices", devices,
               "--output", out, *extra]
        if subset is not None:
            cmd += ["--subset", subset]
        if reference:
            cmd += ["--reference", self.pth]
        rec = self.runner.run(f"evaluate-{tag}", cmd, timeout=timeout, env=env)
        rec["output"] = str(out)
        report = out / "report.json"
        if report.is_file():
            data = json.loads(report.read_text())
            for k in ("images_per_second", "agreement", "max_abs_logit_diff", "num_samples", "world_size",
                      "precision", "attention", "compile", "cache", "top1", "gate"):
                rec[k] = data.get(k)
        else:
            rec["images_per_second"] = None
            self.notes.append(f"evaluate run '{tag}' wrote no report (exit {rec['rc']}): see {rec['log']}")
        progress(f"  {tag}: exit {rec['rc']}, {rec['wall_s']:.1f} s, "
                 f"{_fmt(rec.get('images_per_second'), '.2f')} img/s")
        return slim(rec)

    def bare(self, tag: str, *, batch_sizes: list[int], images: int, passes: int = 1, warmup_batches: int = 0,
             attention: str = "einsum", precision: str = "32-true", compile: bool = False, compare: bool = False,
             device: str = "cpu", timeout: float = 1800, env: dict | None = None) -> dict:
        cmd = [self.py, THIS_FILE, "_bare", "--model", self.hf, "--img-size", self.img_size, "--images", images,
               "--batch-sizes", ",".join(map(str, batch_sizes)), "--passes", passes,
               "--warmup-batches", warmup_batches, "--attention", attention, "--precision", precision,
               "--device", device]
        if compile:
            cmd.append("--compile")
        if compare:
            cmd.append("--compare")
        rec = self.runner.run(f"bare-{tag}", cmd, timeout=timeout, env=env)
        lines = [ln for ln in rec["stdout"].splitlines() if ln.startswith("{")]
        rec["result"] = json.loads(lines[-1]) if rec["rc"] == 0 and lines else None
        if rec["result"] is None:
            self.notes.append(f"bare loop '{tag}' failed (exit {rec['rc']}): see {rec['log']}")
        else:
            first = rec["result"]["batch_sizes"][str(batch_sizes[0])]["pass_ips"]
            progress(f"  bare {tag}: {rec['wall_s']:.1f} s, {', '.join(f'{v:.2f}' for v in first)} img/s")
        return slim(rec)

    @staticmethod
    def ips(runs: list[dict]) -> list:
        return [r.get("images_per_second") for r in runs]

    @staticmethod
    def bare_ips(runs: list[dict], bs: int, pass_index: int = 0) -> list:
        out = []
        for r in runs:
            res = r.get("result")
            passes = res["batch_sizes"][str(bs)]["pass_ips"] if res else []
            out.append(passes[pass_index] if len(passes) > pass_index else None)
        return out

    # -- 1 -----------------------------------------------------------------------------------
    def section1(self) -> dict:
        p = self.plan
        harness, bare = [], []
        for r in range(p.repeats):
            harness.append(self.harness(f"s1-jpeg-fp32-r{r}"))
            # one cold pass (a fresh process, as the harness's epoch), then a warm one (information)
            bare.append(self.bare(f"s1-fp32-r{r}", batch_sizes=[p.batch_size], images=p.images,
                                  passes=2 if r == 0 else 1, compare=(r == 0)))
        h = median(self.ips(harness))
        b_cold = median(self.bare_ips(bare, p.batch_size, 0))
        b_warm = median(self.bare_ips(bare, p.batch_size, 1))
        rt = ratio(h, b_cold)
        return {
            "description": "python -m evaluate images_per_second (JPEG path, default workers, no --reference) "
                           "over a bare model(pixel_values) loop on pre-made float32 tensors in a fresh process "
                           "(first pass, cold like the harness's epoch; same batch size and images; the first "
                           "repeat also times a second, warm pass)",
            "images": p.images, "batch_size": p.batch_size, "num_workers": self.default_workers,
            "harness": {"runs": harness, "images_per_second": self.ips(harness), "median": h,
                        "wall_s": [r["wall_s"] for r in harness], "median_wall_s": median([r["wall_s"] for r in harness])},
            "bare": {"runs": bare, "threads": _first(bare, lambda r: r["result"]["threads"]),
                     "cold_images_per_second": self.bare_ips(bare, p.batch_size, 0), "median": b_cold,
                     "warm_images_per_second": self.bare_ips(bare, p.batch_size, 1), "median_warm": b_warm},
            "ratio": rt,
            "ratio_vs_warm_bare": ratio(h, b_warm),
            "target": target_dict("harness_overhead"),
            "met": met(rt["value"], TARGETS["harness_overhead"]),
        }

    # -- 2 -----------------------------------------------------------------------------------
    def section2(self, s1: dict) -> dict:
        from evaluate.cache import open_cache
        from evaluate.dataset import EvalDataset
        from evaluate.layouts import discover
        from evaluate.models import inspect_folder
        from evaluate.preprocess import ReleaseTransform

        p = self.plan
        cache_dir = self.work / "cache"
        build = self.runner.run("cache-build", [
            self.py, "-m", "evaluate", "cache", "build", "--model", self.hf, "--config", self.config,
            "--data", self.photos, "--cache-dir", cache_dir])
        progress(f"  cache build: exit {build['rc']}, {build['wall_s']:.1f} s")

        folder = inspect_folder(str(self.hf))
        source = discover(self.photos, label2id=folder.label2id)
        samples = list(source.samples)
        transforms = {"release": ReleaseTransform(self.variant.preprocessing)}
        jpeg_ds = EvalDataset(source, samples, transforms)
        cache_ds = open_cache(cache_dir, samples, transforms) if build["rc"] == 0 else None

        settings = [("jpeg", self.default_workers), ("jpeg", 0), ("cache", 0), ("cache", self.default_workers)]
        data_path = {}
        for kind, workers in settings:
            key = f"{kind}_workers{workers}"
            times = []
            for _ in range(p.repeats):
                ds = jpeg_ds if kind == "jpeg" else cache_ds
                times.append(loader_throughput(ds, p.batch_size, workers) if ds is not None else None)
            data_path[key] = {"images_per_second": times, "median": median(times), "num_workers": workers}
            progress(f"  data path {key}: {_fmt(median(times), '.1f')} img/s")
        jpeg_key = f"jpeg_workers{self.default_workers}"
        rt = ratio(data_path["cache_workers0"]["median"], data_path[jpeg_key]["median"])
        rt_same = ratio(data_path[f"cache_workers{self.default_workers}"]["median"], data_path[jpeg_key]["median"])

        # the whole harness on the cache (same settings as section 1's first run), predictions compared
        cached = [self.harness("s2-cache-fp32", "--cache-dir", cache_dir)]  # one run: the figure is information
        jpeg_pred = Path(s1["harness"]["runs"][0]["output"]) / "predictions.csv"
        cache_pred = Path(cached[0]["output"]) / "predictions.csv"
        identical = jpeg_pred.is_file() and cache_pred.is_file() and filecmp.cmp(jpeg_pred, cache_pred, shallow=False)
        report_same = _same_report(Path(s1["harness"]["runs"][0]["output"]), Path(cached[0]["output"]))

        refusals = []
        attempts = [("s2-refuse-subset", f"--subset {p.refusal_subset}",
                     ["--config", self.config, "--subset", str(p.refusal_subset)])]
        if not p.tiny:  # one refusal is enough to exercise the code; the full run shows both
            attempts.append(("s2-refuse-config", "--config cvt-13-384", ["--config", "cvt-13-384"]))
        for tag, label, extra in attempts:
            cmd = [self.py, "-m", "evaluate", "--model", self.hf, "--data", self.photos,
                   "--batch-size", p.batch_size, "--accelerator", "cpu", "--devices", "1",
                   "--cache-dir", cache_dir, "--output", self.work / "runs" / tag, *extra]
            rec = self.runner.run(f"evaluate-{tag}", cmd)
            message = next((ln for ln in rec["stderr_tail"].splitlines() if ln.startswith("error:")), "")
            refusals.append({"flags": label, "rc": rec["rc"], "wall_s": rec["wall_s"], "message": message,
                             "refused_as_expected": rec["rc"] == 2 and "cache" in message
                             and not (self.work / "runs" / tag / "report.json").exists()})
            progress(f"  refusal {label}: exit {rec['rc']}: {message[:120]}")

        harness_cache = median(self.ips(cached))
        return {
            "description": "data path = the harness's DataLoader (EvalDataModule) iterated to the end, no model; "
                           "JPEG: EvalDataset (decode + resize + crop); cache: open_cache (memory-mapped uint8)",
            "images": p.images, "batch_size": p.batch_size,
            "cache_build": slim(build),
            "data_path": data_path,
            "ratio": rt,
            "ratio_cache_default_workers": rt_same,
            "target": target_dict("cache_speedup"),
            "met": met(rt["value"], TARGETS["cache_speedup"]),
            "harness_with_cache": {"runs": cached, "images_per_second": self.ips(cached), "median": harness_cache,
                                   "ratio_to_jpeg_harness": ratio(harness_cache, s1["harness"]["median"]),
                                   "ratio_to_bare": ratio(harness_cache, s1["bare"]["median"])},
            "predictions_identical": bool(identical),
            "predictions_files": [str(jpeg_pred), str(cache_pred)],
            "report_figures_identical": report_same,
            "mismatched_cache_refused": refusals,
            "all_refused": all(r["refused_as_expected"] for r in refusals),
        }

    # -- 3 -----------------------------------------------------------------------------------
    def section3(self) -> dict:
        from cvt_port.variants import get_variant

        p = self.plan
        conv_dir = self.work / "conversion"
        conv_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if p.conversion_variant == "tiny":
            variant, variant_flag = self.variant, ["--variant", self.config]
            path = conv_dir / "bench-tiny.pth"
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
            out = conv_dir / f"hf-r{r}"
            os.sync()  # every timed run starts with no dirty pages from the one before (writeback is shared)
            rec = self.runner.run(f"convert-r{r}", [self.py, "-m", "cvt_port", "convert", path, out, *variant_flag])
            facts = out / "conversion.json"
            if facts.is_file():
                f = json.loads(facts.read_text())
                rec["in_process_wall_time_s"] = f.get("wall_time_s")
                rec["in_process_peak_rss_mib"] = f.get("peak_rss_mib")
                rec["parity_max_abs_logit_diff"] = f.get("parity", {}).get("max_abs_logit_diff")
                rec["output_bytes"] = sum(q.stat().st_size for q in out.iterdir() if q.is_file())
            else:
                self.notes.append(f"conversion r{r} failed (exit {rec['rc']}): see {rec['log']}")
            shutil.rmtree(out, ignore_errors=True)
            convert.append(slim(rec))
            progress(f"  convert r{r}: exit {rec['rc']}, {rec['wall_s']:.1f} s, peak RSS {rec['peak_rss_mib']:.0f} MiB")

            target = conv_dir / f"baseline-r{r}.safetensors"
            os.sync()
            rec = self.runner.run(f"baseline-r{r}", [self.py, "-c", BASELINE_SCRIPT, path, target])
            rec["output_bytes"] = target.stat().st_size if target.is_file() else None
            target.unlink(missing_ok=True)
            baseline.append(slim(rec))
            progress(f"  baseline r{r}: exit {rec['rc']}, {rec['wall_s']:.1f} s, peak RSS {rec['peak_rss_mib']:.0f} MiB")

            os.sync()
            rec = self.runner.run(f"import-floor-r{r}", [self.py, "-c", IMPORT_FLOOR_SCRIPT])
            floor.append(slim(rec))
            progress(f"  import floor r{r}: exit {rec['rc']}, {rec['wall_s']:.1f} s")
        path.unlink(missing_ok=True)

        ok = lambda runs: [r for r in runs if r["rc"] == 0]  # noqa: E731
        cw, bw = median([r["wall_s"] for r in ok(convert)]), median([r["wall_s"] for r in ok(baseline)])
        fw = median([r["wall_s"] for r in ok(floor)])
        crss = max([r["peak_rss_mib"] for r in ok(convert)], default=None)
        brss = max([r["peak_rss_mib"] for r in ok(baseline)], default=None)
        size_mib = size / 2**20
        wall = ratio(cw, bw)
        rss = ratio(crss, size_mib)
        return {
            "description": "wall time of a `python -m cvt_port convert FILE OUT` subprocess vs a subprocess doing "
                           "torch.load(mmap=True, weights_only=True) + safetensors save_file of the same tensors "
                           "(interpreter and imports in both; os.sync() before each run); peak RSS from os.wait4 of "
                           "each subprocess; the file was just written, so it is in the page cache for every run. "
                           "import_floor: a subprocess that only imports torch and transformers' CvT model, the "
                           "least any converter pays that runs the converted model to check it",
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
            "wall_met": met(wall["value"], TARGETS["conversion_wall"]),
            "rss_ratio": rss, "rss_target": target_dict("conversion_rss"),
            "rss_met": met(rss["value"], TARGETS["conversion_rss"]),
            "baseline_rss_ratio": ratio(brss, size_mib),
        }

    # -- 4 -----------------------------------------------------------------------------------
    def option_runs(self, tag: str, flags: tuple, sub) -> tuple[list[dict], dict]:
        """(speed runs, one --reference run) of a harness option; with --tiny one run with --reference
        serves for both, to save process starts."""
        if self.plan.tiny:
            ref = self.harness(f"s4-{tag}-ref", *flags, reference=True)
            return [ref], ref
        runs = [self.harness(f"s4-{tag}-r{r}", *flags) for r in range(self.plan.repeats)]
        return runs, self.harness(f"s4-ref-{tag}", *flags, subset=sub, reference=True)

    def section4(self, s1: dict) -> dict:
        import torch

        p = self.plan
        fp32 = s1["harness"]["median"]
        sub = p.reference_subset
        out: dict = {"description": "each option through python -m evaluate (CPU, 1 process, default workers, "
                                    "JPEG path); speed-ups are over section 1's float32 einsum harness runs; "
                                    "exactness from --reference runs (the converted model vs the original .pth, "
                                    "same batches) on " + (f"a {sub}-image subset" if sub else "all images"),
                     "fp32_einsum_images_per_second": fp32}

        # exactness of the default path (the einsum baseline of the sdpa comparison)
        ref_einsum = self.harness("s4-ref-fp32-einsum", subset=sub, reference=True)

        # bf16-mixed
        bf16, ref_bf16 = self.option_runs("bf16", ("--precision", "bf16-mixed"), sub)
        bf16_med = median(self.ips(bf16))
        agree_fp32 = _top1_agreement(Path(s1["harness"]["runs"][0]["output"]) / "predictions.csv",
                                     Path(bf16[0]["output"]) / "predictions.csv")
        compare = _first(s1["bare"]["runs"], lambda r: r["result"]["compare"]) or {}
        out["bf16_mixed"] = {
            "runs": bf16, "images_per_second": self.ips(bf16), "median": bf16_med,
            "speedup_vs_fp32": ratio(bf16_med, fp32),
            "reference_run": ref_bf16,
            "agreement_with_original": ref_bf16.get("agreement"),
            "max_abs_logit_diff_vs_original": ref_bf16.get("max_abs_logit_diff"),
            "note": "the original always runs in float32 outside autocast, so the --reference figures compare "
                    "bf16 with the float32 original; top1_agreement_with_fp32_run compares the predictions.csv of a "
                    "bf16 run with a float32 run, and the bare figures bf16 autocast with float32 logits",
            "top1_agreement_with_fp32_run": agree_fp32,
            "bare_bf16_vs_fp32_max_abs_logit_diff": compare.get("bf16_vs_fp32_max_abs_logit_diff"),
            "bare_bf16_vs_fp32_top1_agreement": compare.get("bf16_vs_fp32_top1_agreement"),
        }

        # sdpa
        sdpa, ref_sdpa = self.option_runs("sdpa", ("--attention", "sdpa"), sub)
        sdpa_med = median(self.ips(sdpa))
        diff = ref_sdpa.get("max_abs_logit_diff")
        out["sdpa"] = {
            "runs": sdpa, "images_per_second": self.ips(sdpa), "median": sdpa_med,
            "speedup_vs_einsum": ratio(sdpa_med, fp32),
            "reference_run": ref_sdpa, "reference_run_einsum": ref_einsum,
            "max_abs_logit_diff_vs_original": diff,
            "einsum_max_abs_logit_diff_vs_original": ref_einsum.get("max_abs_logit_diff"),
            "agreement_with_original": ref_sdpa.get("agreement"),
            "bare_sdpa_vs_einsum_max_abs_logit_diff": compare.get("sdpa_vs_einsum_max_abs_logit_diff"),
            "target": target_dict("sdpa_max_abs_logit_diff"),
            "met": met(diff, TARGETS["sdpa_max_abs_logit_diff"]),
        }

        # compile
        if p.compile:
            # each compiling process gets an empty inductor cache: compile times are those of a first run
            run = self.harness("s4-compile", "--compile", timeout=2400,
                               env={"TORCHINDUCTOR_CACHE_DIR": str(self.work / "inductor-harness")})
            bare_c = self.bare("s4-compile", batch_sizes=[p.batch_size], images=p.images, passes=2, compile=True,
                               timeout=2400, env={"TORCHINDUCTOR_CACHE_DIR": str(self.work / "inductor-bare")})
            first = _first([bare_c], lambda r: r["result"]["batch_sizes"][str(p.batch_size)]["pass_s"][0])
            steady = _first([bare_c], lambda r: r["result"]["batch_sizes"][str(p.batch_size)]["pass_ips"][1])
            steady_s = _first([bare_c], lambda r: r["result"]["batch_sizes"][str(p.batch_size)]["pass_s"][1])
            out["compile"] = {
                "measured": True,
                "harness_run": run,
                "harness_images_per_second": run.get("images_per_second"),
                "harness_wall_s": run["wall_s"],
                "fp32_harness_median_wall_s": s1["harness"]["median_wall_s"],
                "harness_speedup_vs_fp32": ratio(run.get("images_per_second"), fp32),
                "harness_wall_ratio_vs_fp32": ratio(run["wall_s"], s1["harness"]["median_wall_s"]),
                "note": "the harness's images_per_second includes compilation: torch.compile compiles on the "
                        "first batch, inside the timed validation epoch; the bare compiled loop gives the "
                        "steady state (second pass) and the compile cost (first pass minus a steady pass)",
                "bare_run": bare_c,
                "bare_first_pass_s": first,
                "bare_steady_images_per_second": steady,
                "bare_compile_s_estimate": (first - steady_s) if first is not None and steady_s is not None else None,
                "bare_eager_warm_images_per_second": s1["bare"]["median_warm"],
                "bare_steady_speedup_vs_eager": ratio(steady, s1["bare"]["median_warm"]),
            }
        else:
            out["compile"] = {"measured": False, "note": "skipped (--tiny or --no-compile)"}

        # GPU
        if torch.cuda.is_available():
            gpu = {"device": torch.cuda.get_device_name(0)}
            for name, extra in (("fp32", []), ("bf16_mixed", ["--precision", "bf16-mixed"]),
                                ("sdpa", ["--attention", "sdpa"]), ("compile", ["--compile"])):
                if name == "compile" and not p.compile:
                    continue
                rec = self.harness(f"s4-gpu-{name}", *extra, accelerator="gpu")
                gpu[name] = {"run": rec, "images_per_second": rec.get("images_per_second")}
            base = gpu["fp32"]["images_per_second"]
            for name in ("bf16_mixed", "sdpa", "compile"):
                if name in gpu:
                    gpu[name]["speedup_vs_fp32"] = ratio(gpu[name]["images_per_second"], base)
            out["gpu"] = gpu
        else:
            out["gpu"] = "no GPU"
        return out

    # -- 5 -----------------------------------------------------------------------------------
    def section5(self, s1: dict) -> dict:
        p = self.plan
        ddp = [self.harness(f"s5-ddp2-r{r}", "--strategy", "ddp", devices="2") for r in range(p.ddp_repeats)]
        ddp_med = median(self.ips(ddp))
        one = s1["harness"]["median"]
        sweep_run = self.bare("s5-batch-sweep", batch_sizes=p.sweep_batch_sizes, images=p.sweep_images,
                              passes=p.sweep_repeats, warmup_batches=1)
        sweep = {}
        res = sweep_run.get("result")
        for bs in p.sweep_batch_sizes:
            passes = res["batch_sizes"][str(bs)]["pass_ips"] if res else []
            sweep[str(bs)] = {"images_per_second": passes, "median": median(passes)}
        best = max((v["median"] for v in sweep.values() if v["median"]), default=None)
        for v in sweep.values():
            v["relative_to_best"] = ratio(v["median"], best)
        return {
            "processes": {
                "description": "python -m evaluate --accelerator cpu --devices 2 --strategy ddp vs --devices 1 "
                               "(section 1's runs); each process has its own default DataLoader workers and "
                               "Lightning gives each max(1, cores // processes) torch threads",
                "devices_1": {"images_per_second": s1["harness"]["images_per_second"], "median": one},
                "devices_2_ddp": {"runs": ddp, "images_per_second": self.ips(ddp), "median": ddp_med,
                                  "world_size": [r.get("world_size") for r in ddp],
                                  "num_samples": [r.get("num_samples") for r in ddp]},
                "ratio": ratio(ddp_med, one),
            },
            "batch_sizes": {
                "description": "bare model(pixel_values) loop (float32, einsum, fresh subprocess, one untimed "
                               f"warm-up batch per size, {p.sweep_images} images per pass, {p.sweep_repeats} "
                               "pass(es) per size); the harness sweep would cost a full run per size",
                "loop": "bare",
                "run": sweep_run,
                "results": sweep,
            },
        }


IMPORT_FLOOR_SCRIPT = """\
import gc
import torch
import transformers.models.cvt.modeling_cvt
gc.freeze()  # as python -m cvt_port does before it exits
"""

BASELINE_SCRIPT = """\
import sys
import torch
from safetensors.torch import save_file
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True, mmap=True)
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])
"""


def save_release_checkpoint(variant, path: Path, seed: int = 0) -> None:
    """A randomly initialised reference model saved exactly as the release files are (plain state dict)."""
    import gc

    import torch

    from cvt_port.reference import OriginalCvT, randomize_

    with torch.no_grad():
        model = randomize_(OriginalCvT(variant.architecture), seed=seed).eval()
    torch.save(model.state_dict(), path)
    del model
    gc.collect()


def loader_throughput(dataset, batch_size: int, workers: int) -> float:
    """Images per second of the harness's own DataLoader (EvalDataModule, no trainer), start to end."""
    from evaluate.lightning_module import EvalDataModule

    t0 = time.perf_counter()
    n = 0
    for batch in EvalDataModule(dataset, batch_size, workers).val_dataloader():
        n += len(batch["index"])
    return n / (time.perf_counter() - t0)


def _same_report(a: Path, b: Path) -> bool | None:
    try:
        ra, rb = json.loads((a / "report.json").read_text()), json.loads((b / "report.json").read_text())
    except OSError:
        return None
    keys = ("num_samples", "top1", "top5", "subset_sha256", "per_class_top1")
    return all(ra.get(k) == rb.get(k) for k in keys)


def _top1_agreement(a: Path, b: Path) -> float | None:
    import csv

    try:
        with open(a, newline="") as fa, open(b, newline="") as fb:
            ra = {r["image_id"]: r["pred1"] for r in csv.DictReader(fa)}
            rb = {r["image_id"]: r["pred1"] for r in csv.DictReader(fb)}
    except (OSError, KeyError):
        return None
    common = set(ra) & set(rb)
    return sum(ra[k] == rb[k] for k in common) / len(common) if common else None


def _first(runs, get):
    for r in runs:
        try:
            return get(r)
        except (KeyError, TypeError, IndexError):
            continue
    return None


def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "n/a"


def machine_info() -> dict:
    import torch

    model = None
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    import lightning
    import transformers

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


# --------------------------------------------------------------------------- the table


def build_table(results: dict) -> list[dict]:
    s = results["sections"]
    rows = []

    def row(num, name, figures, rt, target, ok):
        rows.append({"section": num, "benchmark": name, "figures": figures,
                     "ratio": rt, "target": target, "met": ok})

    def fr(r, spec=".2f", suffix=""):
        return f"{_fmt(r.get('value') if isinstance(r, dict) else r, spec)}{suffix}"

    def yn(v):
        return "n/a" if v is None else ("yes" if v else "no")

    s1, s2 = s.get("1_harness_overhead"), s.get("2_cache")
    if s1:
        row("1", "harness overhead (JPEG, fp32)",
            f"harness {_fmt(s1['harness']['median'], '.2f')} img/s / bare loop {_fmt(s1['bare']['median'], '.2f')} img/s"
            f" (bare warm {_fmt(s1['bare']['median_warm'], '.2f')}"
            + (f"; harness on the cache {_fmt(s2['harness_with_cache']['ratio_to_bare']['value'], '.2f')} of bare"
               if s2 else "") + ")",
            fr(s1["ratio"]), ">= 0.90", yn(s1["met"]))
    if s2:
        dp = s2["data_path"]
        w = results["config"]["default_num_workers"]
        row("2", "cache data path vs JPEG",
            f"cache {_fmt(dp['cache_workers0']['median'], '.0f')} img/s (0 workers; {w} workers "
            f"{_fmt(dp[f'cache_workers{w}']['median'], '.0f')}) / JPEG {_fmt(dp[f'jpeg_workers{w}']['median'], '.0f')} "
            f"img/s ({w} workers; 0 workers {_fmt(dp['jpeg_workers0']['median'], '.0f')})",
            fr(s2["ratio"], ".1f", "x"), ">= 10x", yn(s2["met"]))
        hc = s2["harness_with_cache"]
        row("2", "predictions: cache vs JPEG run",
            f"predictions.csv byte-identical: {str(s2['predictions_identical']).lower()}; harness on cache "
            f"{_fmt(hc['median'], '.2f')} img/s", fr(hc["ratio_to_jpeg_harness"], ".2f", " (speed)"),
            "identical", yn(s2["predictions_identical"]))
        ref = "; ".join(f"{r['flags']}: exit {r['rc']}" for r in s2["mismatched_cache_refused"])
        row("2", "cache of other settings refused", ref, "-", "exit 2", yn(s2["all_refused"]))
    s3 = s.get("3_conversion")
    if s3:
        c, b = s3["convert"], s3["baseline"]
        row("3", f"convert {s3['variant']} ({s3['file_mib']:.0f} MiB): wall",
            f"convert {_fmt(c['median_wall_s'], '.1f')} s (in-process {_fmt(c['median_in_process_wall_time_s'], '.1f')} s)"
            f" / baseline load+save_file {_fmt(b['median_wall_s'], '.1f')} s",
            fr(s3["wall_ratio"], ".2f", "x"), "<= 1.5x", yn(s3["wall_met"]))
        fl = s3.get("import_floor") or {}
        row("3", "convert: import floor / baseline",
            f"import torch + transformers' CvT only {_fmt(fl.get('median_wall_s'), '.1f')} s; leaves "
            f"{_fmt(fl.get('budget_left_at_target_s'), '.2f')} s of the 1.5x budget; convert spends "
            f"{_fmt(fl.get('convert_minus_floor_s'), '.2f')} s beyond it",
            fr(fl.get("ratio_to_baseline") or {"value": None}, ".2f", "x"), "(bound)", "-")
        row("3", "convert: peak RSS / file size",
            f"convert {_fmt(c['max_peak_rss_mib'], '.0f')} MiB (baseline {_fmt(b['max_peak_rss_mib'], '.0f')} MiB) / "
            f"file {s3['file_mib']:.0f} MiB", fr(s3["rss_ratio"], ".2f", "x"), "<= 1.5x", yn(s3["rss_met"]))
    s4 = s.get("4_options")
    if s4:
        bf = s4["bf16_mixed"]
        row("4", "--precision bf16-mixed (CPU)",
            f"{_fmt(bf['median'], '.2f')} img/s vs fp32 {_fmt(s4['fp32_einsum_images_per_second'], '.2f')}; agreement "
            f"{_fmt(bf['agreement_with_original'], '.3f')}, max|dlogit| {_fmt(bf['max_abs_logit_diff_vs_original'], '.2g')}"
            f" vs the float32 original; top-1 = fp32 run on {_fmt(bf['top1_agreement_with_fp32_run'], '.3f')}",
            fr(bf["speedup_vs_fp32"], ".2f", "x"), "(effect)", "-")
        c = s4["compile"]
        if c.get("measured"):
            row("4", "--compile (CPU)",
                f"harness {_fmt(c['harness_images_per_second'], '.2f')} img/s after the first batch, whole run {c['harness_wall_s']:.0f} s "
                f"vs {_fmt(c['fp32_harness_median_wall_s'], '.0f')} s; bare steady {_fmt(c['bare_steady_images_per_second'], '.2f')}"
                f" vs eager {_fmt(c['bare_eager_warm_images_per_second'], '.2f')} img/s "
                f"(compile ~{_fmt(c['bare_compile_s_estimate'], '.0f')} s)",
                fr(c["bare_steady_speedup_vs_eager"], ".2f", "x (steady)"), "(effect)", "-")
        else:
            row("4", "--compile (CPU)", c["note"], "-", "(effect)", "-")
        sd = s4["sdpa"]
        row("4", "--attention sdpa (CPU)",
            f"{_fmt(sd['median'], '.2f')} img/s vs einsum {_fmt(s4['fp32_einsum_images_per_second'], '.2f')}; "
            f"max|dlogit| vs original {_fmt(sd['max_abs_logit_diff_vs_original'], '.2g')} (einsum "
            f"{_fmt(sd['einsum_max_abs_logit_diff_vs_original'], '.2g')}; sdpa-einsum "
            f"{_fmt(sd['bare_sdpa_vs_einsum_max_abs_logit_diff'], '.2g')})",
            fr(sd["speedup_vs_einsum"], ".2f", "x"), "diff <= 1e-05", yn(sd["met"]))
        gpu = s4["gpu"]
        if isinstance(gpu, str):
            row("4", "options on GPU", gpu, "-", "-", "-")
        else:
            parts = [f"{k} {_fmt(gpu[k]['images_per_second'], '.1f')}" for k in ("fp32", "bf16_mixed", "sdpa", "compile")
                     if k in gpu]
            row("4", f"options on GPU ({gpu['device']})", ", ".join(parts) + " img/s", "-", "(effect)", "-")
    s5 = s.get("5_scaling")
    if s5:
        pr = s5["processes"]
        row("5", "2 CPU processes (DDP) vs 1",
            f"2 procs {_fmt(pr['devices_2_ddp']['median'], '.2f')} img/s / 1 proc {_fmt(pr['devices_1']['median'], '.2f')} img/s",
            fr(pr["ratio"], ".2f", "x"), "(scaling)", "-")
        sw = s5["batch_sizes"]["results"]
        row("5", "batch size 1/8/32/64 (bare loop)",
            ", ".join(f"bs {bs}: {_fmt(v['median'], '.2f')}" for bs, v in sw.items()) + " img/s",
            "/".join(fr(v["relative_to_best"], ".2f") for v in sw.values()) + " of best", "(scaling)", "-")
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("#", "benchmark", "figures", "ratio", "target", "met")
    keys = ("section", "benchmark", "figures", "ratio", "target", "met")
    cells = [head] + [tuple(str(r[k]) for k in keys) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    line = lambda c: " | ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip()  # noqa: E731
    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(c) for c in cells[1:]])


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0] + " Exit status 0 "
                                "whether or not the targets are met (a benchmark reports; it does not gate).")
    p.add_argument("--repeats", type=int, help="repeats per timed figure; the median is reported (default 3)")
    p.add_argument("--images", type=int, help="images per harness pass (default 192: the 100 photos, 92 of them "
                   "twice, through links; --tiny: 8)")
    p.add_argument("--batch-size", type=int, help="batch size of the harness and bare loop (default 32; --tiny: 4)")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help=f"folder of real ImageNet JPEGs "
                   f"(val/<wnid>/*.JPEG; default {DEFAULT_PHOTOS})")
    p.add_argument("--workdir", type=Path, help="where work files go (a fresh folder is made inside it; default: "
                   "the system temp folder); removed at the end unless --keep")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"results file (default {DEFAULT_OUTPUT})")
    p.add_argument("--tiny", action="store_true", help="a tiny model, 8 photos, 1 repeat, a tiny conversion, no "
                   "compile: every section in about a minute (for the tests)")
    p.add_argument("--no-compile", action="store_true", help="skip the --compile measurement")
    p.add_argument("--compile", action="store_true", help="measure --compile even with --tiny")
    p.add_argument("--sections", default="1,2,3,4,5", help="which sections to run (default: all)")
    p.add_argument("--verbose", action="store_true", help="show every command")
    return p


SECTION_KEYS = {"1": "1_harness_overhead", "2": "2_cache", "3": "3_conversion", "4": "4_options", "5": "5_scaling"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_bare"]:
        return bare_main(argv[1:])
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plan = Plan.make(args)
    photos = args.photos.expanduser().resolve()
    if not photos.is_dir():
        print(f"error: --photos {photos}: no such folder", file=sys.stderr)
        return 2
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    if any(s not in SECTION_KEYS for s in wanted):
        print(f"error: --sections {args.sections}: choose from 1,2,3,4,5", file=sys.stderr)
        return 2
    if "2" in wanted or "4" in wanted or "5" in wanted:
        wanted = sorted(set(wanted) | {"1"})  # their ratios are over section 1's figures
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cvt-bench-", dir=args.workdir))
    t_start = time.perf_counter()
    start = cpu_times()
    try:
        bench = Bench(args, plan, work, photos)
        results = {
            "schema": SCHEMA,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": [sys.executable, "-m", "benchmarks", *argv],
            "config": {**asdict(plan), "default_num_workers": bench.default_workers, "photos": str(photos)},
            "machine": machine_info(),
            "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        }
        progress(f"benchmarks: work folder {work}; load average {os.getloadavg()[0]:.2f}")
        progress("setup: random model in the release format, converted")
        results["setup"] = bench.setup()
        disturb = {}
        steps = {
            "1": lambda: bench.section1(),
            "2": lambda: bench.section2(bench.sections["1_harness_overhead"]),
            "3": lambda: bench.section3(),
            "4": lambda: bench.section4(bench.sections["1_harness_overhead"]),
            "5": lambda: bench.section5(bench.sections["1_harness_overhead"]),
        }
        for num in wanted:
            key = SECTION_KEYS[num]
            progress(f"section {key}")
            c0 = cpu_times()
            bench.sections[key] = steps[num]()
            disturb[key] = disturbance(c0, cpu_times())
            bench.sections[key]["disturbance"] = disturb[key]
        results["sections"] = bench.sections
        total = disturbance(start, cpu_times())
        results["disturbance"] = total
        results["total_wall_s"] = round(time.perf_counter() - t_start, 1)
        notes = list(bench.notes)
        if not plan.tiny:
            notes.append(f"{plan.images} images per harness pass (the 100 photos, some twice, through links), batch "
                         f"size {plan.batch_size}; the batch sweep times {plan.sweep_images} images per size and pass; "
                         "sized to keep the full run under 15 minutes on 2 cores")
        if plan.reference_subset:
            notes.append(f"--reference runs (two models per pass) use --subset {plan.reference_subset}")
        if plan.tiny:
            notes.append("--tiny: tiny CvT, 8 photos, 1 repeat, tiny conversion, no compile, bf16/sdpa speed taken "
                         "from their --reference runs: figures exercise the code, they do not measure the targets")
        for key, d in disturb.items():
            if d["foreign_cpu_share"] is not None and d["foreign_cpu_share"] > 0.05:
                notes.append(f"{key}: other processes used {d['foreign_cpu_s']} CPU s "
                             f"({100 * d['foreign_cpu_share']:.0f}% of the machine) while it ran: figures may be disturbed")
        notes.append(f"load average before {start['loadavg'][0]:.2f}, after {total['loadavg_after'][0]:.2f}; "
                     f"other processes used {total['foreign_cpu_s']} CPU s during the run "
                     f"({_fmt(100 * (total['foreign_cpu_share'] or 0), '.1f')}% of the machine); "
                     f"total {results['total_wall_s']:.0f} s")
        results["notes"] = notes
        results["table"] = build_table(results)
        table = format_table(results["table"])
        results["table_text"] = table
        out = args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(table)
        print()
        for n in notes:
            print(f"note: {n}")
        print(f"results: {out}")
    finally:
        if args.keep:
            progress(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
