"""Models and data the evaluation tests make for themselves: a tiny 1000-class CvT in the release
format, converted with cvt_port, and ImageNet-style folders of real JPEG files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import yaml

import cvt_port
from cvt_port.labels import imagenet_wnids
from cvt_port.reference import OriginalCvT, randomize_
from cvt_port.variants import load_variant_file

TINY_IMAGENET = {
    "name": "test-tiny-imagenet",
    "architecture": {
        "depth": [1, 2, 3], "num_heads": [1, 2, 4], "embed_dim": [16, 32, 64],
        "patch_sizes": [7, 3, 3], "patch_stride": [4, 2, 2], "patch_padding": [2, 1, 1],
        "mlp_ratio": 4.0, "cls_token": [False, False, True], "num_classes": 1000, "in_chans": 3,
        "activation": "quick_gelu",
    },
    "preprocessing": {
        "img_size": 224, "resize": "shorter_side_then_center_crop", "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
    },
    "labels": "imagenet-1k",
    "reference": {"top1": None, "num_samples": 50000},
    "gate": {"top1_tolerance": 0.1, "min_agreement": 0.999},
}


def make_tiny_model(root: Path, seed: int = 0, **overrides) -> dict:
    """{yaml, pth, hf, reference}: a tiny CvT saved like a release file and converted with cvt_port."""
    root.mkdir(parents=True, exist_ok=True)
    doc = {**TINY_IMAGENET, **overrides}
    cfg = root / "test-tiny-imagenet.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    variant = load_variant_file(cfg)
    model = randomize_(OriginalCvT(variant.architecture), seed=seed).eval()
    # a random tiny net barely separates its classes; a larger head spread keeps top-1 decisive
    with torch.no_grad():
        model.head.weight.mul_(20)
    pth = root / "tiny.pth"
    torch.save(model.state_dict(), pth)
    hf = cvt_port.convert(pth, root / "hf", variant=cfg, log=lambda m: None)
    return {"yaml": cfg, "pth": pth, "hf": hf, "reference": model}


def evaluate_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluate", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def wnids(n: int, step: int = 1) -> list[str]:
    return imagenet_wnids()[: n * step : step]
