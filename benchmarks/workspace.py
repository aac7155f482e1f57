"""What every benchmark shares: the plan of a run (sizes, repeats) and the workspace it runs in.

The workspace makes, once per run, a randomly initialised model in the release format
(:mod:`benchmarks.synthetic.checkpoints`, as the tests' models) and its conversion (the figures are about speed and
exactness, not accuracy) and links the photos into the work folder; it runs
the product the way a user does, ``python -m evaluate ...`` (:meth:`Workspace.harness`), and the bare model
loop, ``python -m benchmarks.bare_loop`` (:meth:`Workspace.bare`), both under the measured process runner.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .timing import ProcessRunner, fmt, progress, slim

REPORT_FIELDS = ("images_per_second", "agreement", "max_abs_logit_diff", "num_samples", "world_size", "precision",
                 "attention", "compile", "cache", "top1", "gate")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class Plan:
    """What one run measures (the full defaults are sized for ~12 minutes on 2 CPU cores)."""

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
    conversion_variant: str  # "cvt-w24-384-22k" or "tiny" (tiny-imagenet.yaml)
    eval_variant: str  # "cvt-13-224" or "tiny" (tiny-imagenet.yaml at 64x64: tiny_config)
    # DataLoader workers of every harness run, passed as --num-workers: the benchmark states its settings
    # rather than reading the CLI's default (min(4, cores), the harness's default when this was written)
    num_workers: int = field(default_factory=lambda: min(4, usable_cores()))
    budget_s: float | None = None  # seconds a budgeted benchmark (gpu) may take; None: its own default
    # the scale benchmark: classes and images per class of each size, and where its data set is kept
    scale_classes: int = 1000
    scale_per_class: list[int] = field(default_factory=lambda: [5, 20, 50])
    scale_data: str | None = None

    @classmethod
    def make(cls, *, tiny: bool = False, repeats: int | None = None, images: int | None = None,
             batch_size: int | None = None, compile: bool | None = None, budget_s: float | None = None,
             scale_per_class: list[int] | None = None, scale_data: str | None = None) -> "Plan":
        """The full plan (or the ``tiny`` one, every benchmark in about a minute); None keeps a default."""
        if tiny:
            plan = cls(tiny=True, repeats=1, images=8, batch_size=4, reference_subset=None, refusal_subset=4,
                       sweep_batch_sizes=[1, 4, 8], sweep_images=8, sweep_repeats=1, ddp_repeats=1,
                       compile=False, conversion_variant="tiny", eval_variant="tiny")
        else:
            plan = cls(tiny=False, repeats=3, images=192, batch_size=32, reference_subset=64, refusal_subset=10,
                       sweep_batch_sizes=[1, 8, 32, 64], sweep_images=64, sweep_repeats=3, ddp_repeats=3,
                       compile=True, conversion_variant="cvt-w24-384-22k", eval_variant="cvt-13-224")
        if repeats is not None:
            plan.repeats = plan.ddp_repeats = plan.sweep_repeats = max(1, repeats)
        if images is not None:
            plan.images = images
        if batch_size is not None:
            plan.batch_size = batch_size
        if compile is not None:
            plan.compile = compile
        plan.budget_s = budget_s
        if tiny:
            plan.scale_classes, plan.scale_per_class = 10, [4]  # one size: the tests check the slopes on sizes made up
        if scale_per_class:
            plan.scale_per_class = sorted(scale_per_class)
        plan.scale_data = scale_data
        plan.refusal_subset = min(plan.refusal_subset, max(1, plan.images // 2))
        if plan.reference_subset is not None and plan.reference_subset >= plan.images:
            plan.reference_subset = None
        return plan


def derived_config(folder: Path, name: str, *, img_size: int, patch_stride: list[int] | None = None) -> Path:
    """``folder/<name>.yaml``: the tiny CvT of ``configs/testing/tiny-imagenet.yaml`` with the input size (and the
    patch strides) a benchmark states itself, so that its figures do not move when the tests' tiny config does."""
    import yaml

    from cvt_port.variants import TESTING_CONFIGS_DIR, read_yaml

    doc = read_yaml(TESTING_CONFIGS_DIR / "tiny-imagenet.yaml")
    if doc.get("name") != "tiny-imagenet" or doc["architecture"]["patch_stride"] != [4, 2, 2]:
        raise RuntimeError(f"{TESTING_CONFIGS_DIR / 'tiny-imagenet.yaml'}: no longer the tiny config")
    doc["name"], doc["preprocessing"]["img_size"] = name, img_size
    if patch_stride is not None:
        doc["architecture"]["patch_stride"] = patch_stride
    out = Path(folder) / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def tiny_config(folder: Path) -> Path:
    """``folder/tiny-imagenet-64.yaml``: the tiny CvT evaluated at 64x64 (12x less work per image than at 224:
    what ``--tiny`` runs, to exercise the code, not to measure it)."""
    return derived_config(folder, "tiny-imagenet-64", img_size=64)


def link_photos(source_dir: Path, n: int, dest: Path) -> Path:
    """``dest/val/<wnid>/...``: the first ``n`` photos of ``source_dir`` (cycling through them again, under
    other names, when ``n`` exceeds their number) as symbolic links to the originals."""
    from evaluate.sources.layouts import discover

    files = sorted(Path(s.ref) for s in discover(source_dir).samples if isinstance(s.ref, str))
    if not files:
        raise SystemExit(f"error: no photos in {source_dir}")
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


class Workspace:
    """The work folder of one run, its model, photos and process runner, and the notes of what went wrong."""

    def __init__(self, plan: Plan, work: Path, photos_src: Path, verbose: bool = False,
                 runner: ProcessRunner | None = None):
        self.plan, self.work, self.photos_src = plan, work, photos_src
        self.runner = runner or ProcessRunner(work, verbose)
        self.notes: list[str] = []

    def setup(self) -> dict:
        """Make the random model, convert it, link the photos; what was made (results.json ``setup``)."""
        import torch
        from transformers.utils import logging as hf_logging

        import cvt_port
        from cvt_port.variants import get_variant
        from benchmarks.synthetic.checkpoints import save_release_checkpoint

        hf_logging.disable_progress_bar()  # "Writing model shards" bars of save_pretrained
        t0 = time.perf_counter()
        models = self.work / "models"
        models.mkdir(parents=True, exist_ok=True)
        if self.plan.eval_variant == "tiny":
            self.config = str(tiny_config(models))
            self.pth = models / "bench-tiny.pth"
        else:
            self.config = self.plan.eval_variant
            self.pth = models / get_variant(self.plan.eval_variant).release_file
        self.variant = get_variant(self.config)
        save_release_checkpoint(self.variant, self.pth, seed=0)
        self.hf = cvt_port.convert(self.pth, models / "hf", variant=self.config, overwrite=True, log=lambda m: None)
        self.img_size = self.variant.preprocessing.img_size
        self.photos = link_photos(self.photos_src, self.plan.images, self.work / "photos")
        return {"variant": self.variant.name, "checkpoint": str(self.pth), "checkpoint_bytes": self.pth.stat().st_size,
                "converted": str(self.hf), "photos_source": str(self.photos_src), "photos": str(self.photos),
                "images": self.plan.images, "setup_s": round(time.perf_counter() - t0, 2),
                "torch_threads": torch.get_num_threads()}

    def evaluate_args(self, out: Path, *extra, config: bool = True, accelerator: str = "cpu",
                      devices: str = "1") -> list:
        """Arguments of ``python -m evaluate`` on the workspace's model and photos, the plan's batch and workers."""
        return ["--model", self.hf, *(["--config", self.config] if config else []), "--data", self.photos,
                "--batch-size", self.plan.batch_size, "--num-workers", self.plan.num_workers,
                "--accelerator", accelerator, "--devices", devices, "--output", out, *extra]

    def harness(self, tag: str, *extra, subset: int | None = None, reference: bool = False,
                accelerator: str = "cpu", devices: str = "1", timeout: float = 1800, env: dict | None = None) -> dict:
        """One ``python -m evaluate`` run: its process record and the figures of its report.json."""
        out = self.work / "runs" / tag
        args = self.evaluate_args(out, *extra, accelerator=accelerator, devices=devices)
        if subset is not None:
            args += ["--subset", subset]
        if reference:
            args += ["--reference", self.pth]
        rec = self.runner.module(f"evaluate-{tag}", "evaluate", *args, timeout=timeout, env=env)
        rec["output"] = str(out)
        report = out / "report.json"
        if report.is_file():
            data = json.loads(report.read_text())
            rec.update({k: data.get(k) for k in REPORT_FIELDS})
        else:
            rec["images_per_second"] = None
            self.notes.append(f"evaluate run '{tag}' wrote no report (exit {rec['rc']}): see {rec['log']}")
        progress(f"  {tag}: exit {rec['rc']}, {rec['wall_s']:.1f} s, {fmt(rec.get('images_per_second'), '.2f')} img/s")
        return slim(rec)

    def bare(self, tag: str, *, batch_sizes: list[int], images: int, passes: int = 1, warmup_batches: int = 0,
             attention: str = "einsum", precision: str = "32-true", compile: bool = False, compare: bool = False,
             device: str = "cpu", timeout: float = 1800, env: dict | None = None) -> dict:
        """One ``python -m benchmarks.bare_loop`` run: its process record and its JSON result (``result``)."""
        args = ["--model", self.hf, "--img-size", self.img_size, "--images", images,
                "--batch-sizes", ",".join(map(str, batch_sizes)), "--passes", passes,
                "--warmup-batches", warmup_batches, "--attention", attention, "--precision", precision,
                "--device", device, *(["--compile"] if compile else []), *(["--compare"] if compare else [])]
        rec = self.runner.module(f"bare-{tag}", "benchmarks.bare_loop", *args, timeout=timeout, env=env)
        lines = [ln for ln in rec["stdout"].splitlines() if ln.startswith("{")]
        rec["result"] = json.loads(lines[-1]) if rec["rc"] == 0 and lines else None
        if rec["result"] is None:
            self.notes.append(f"bare loop '{tag}' failed (exit {rec['rc']}): see {rec['log']}")
        else:
            ips = rec["result"]["batch_sizes"][str(batch_sizes[0])]["pass_ips"]
            progress(f"  bare {tag}: {rec['wall_s']:.1f} s, {', '.join(f'{v:.2f}' for v in ips)} img/s")
        return slim(rec)


def harness_ips(runs: list[dict]) -> list:
    return [r.get("images_per_second") for r in runs]


def bare_ips(runs: list[dict], bs: int, pass_index: int = 0) -> list:
    out = []
    for r in runs:
        res = r.get("result")
        passes = res["batch_sizes"][str(bs)]["pass_ips"] if res else []
        out.append(passes[pass_index] if len(passes) > pass_index else None)
    return out
