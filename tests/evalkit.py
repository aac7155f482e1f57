"""Models and data the evaluation tests make for themselves: a tiny 1000-class CvT in the release
format, converted with cvt_port, and ImageNet-style folders of real JPEG files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import cvt_port
from cvt_port.labels import imagenet_wnids
from cvt_port.reference import OriginalCvT, randomize_
from cvt_port.variants import TESTING_CONFIGS_DIR, load_variant_file



def make_tiny_model(root: Path, seed: int = 0) -> dict:
    """{yaml, pth, hf, reference}: a tiny CvT saved like a release file and converted with cvt_port."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = TESTING_CONFIGS_DIR / "tiny-imagenet.yaml"
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
