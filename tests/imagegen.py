"""Folders of real image files for tests (ImageFolder, ILSVRC and flat layouts; corrupt and truncated files).

The images themselves come from :mod:`benchmarks.synthetic.photos`, the one maker of photo-like images that the
benchmarks use too; its writers are imported here for the tests that take them from this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from benchmarks.synthetic.photos import (  # noqa: F401  (re-exported: the tests import them from here)
    jpeg_bytes,
    synthetic_image,
    write_image,
    write_photo_like_set,
)

# Varied sizes (w, h): portrait, landscape, square, odd/even differences.
SIZES = [(64, 48), (47, 81), (90, 90), (120, 67), (55, 100), (73, 52)]


def make_imagefolder(root: Path, classes: Iterable[str], per_class: int = 2, seed: int = 0) -> list[Path]:
    """``root/<class>/img_<k>.JPEG`` for each class; sizes cycle through :data:`SIZES`."""
    paths, k = [], 0
    for c in classes:
        for j in range(per_class):
            paths.append(write_image(Path(root) / c / f"img_{j}.JPEG", SIZES[k % len(SIZES)], seed=seed + k))
            k += 1
    return paths


def make_ilsvrc_imagefolder(root: Path, files: dict[str, list[int]], seed: int = 0) -> list[Path]:
    """``root/<wnid>/ILSVRC2012_val_{n:08d}.JPEG`` for each wnid -> numbers."""
    paths, k = [], 0
    for wnid, numbers in files.items():
        for n in numbers:
            paths.append(write_image(Path(root) / wnid / f"ILSVRC2012_val_{n:08d}.JPEG", SIZES[k % len(SIZES)], seed=seed + k))
            k += 1
    return paths


def make_flat(root: Path, numbers: Iterable[int], seed: int = 0) -> list[Path]:
    """``root/ILSVRC2012_val_{n:08d}.JPEG`` for each n."""
    return [
        write_image(Path(root) / f"ILSVRC2012_val_{n:08d}.JPEG", SIZES[k % len(SIZES)], seed=seed + k)
        for k, n in enumerate(numbers)
    ]


def write_corrupt(path: Path, seed: int = 0) -> Path:
    """Random bytes under an image name (PIL cannot identify it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return path


def write_truncated_jpeg(path: Path, size: tuple[int, int] = (120, 90), seed: int = 0) -> Path:
    """A real JPEG cut off at 60% of its bytes (header fine, scan data missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(size, seed)
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path
