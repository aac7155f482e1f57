"""An ImageNet-shaped validation set at full scale: ``root/val/<wnid>/ILSVRC2012_val_<i>.JPEG``, the 1,000
WordNet-id folders, ``per_class`` JPEGs in each (50 for the real set's 50,000), at the real set's typical sizes
(:data:`~benchmarks.synthetic.photos.PHOTO_LIKE_SIZES`: mostly 500x375 and 500x333) and byte sizes (about 130 KiB
a file: 6.4 GB for 50,000).

Why not :func:`~benchmarks.synthetic.photos.write_imagenet_val`: at 50,000 files its per-image random field costs
15 ms an image; here one noise tile per process is cut at a random place (5 ms), and the set grows in place:
:func:`ensure_scale_set` writes only the files still missing (image ``i`` of class ``c`` is
``ILSVRC2012_val_<i * 1000 + c + 1>``, so the 5-per-class set is part of the 20- and the 50-per-class one) and
:func:`linked_set` gives each size its own folder of hard links, which a walk sees as the real files.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .photos import PHOTO_LIKE_SIZES

CLASSES = 1000
QUALITY, NOISE = 95, 18  # about 130 KiB at 500x375, as the real photos
_TILE = 1200
_noise: np.ndarray | None = None


def _tile() -> np.ndarray:
    global _noise
    if _noise is None:
        _noise = np.random.default_rng(12345).normal(0, NOISE, (_TILE, _TILE, 3)).astype(np.float32)
    return _noise


def image_name(k: int, c: int) -> str:
    """The file name of the ``k``-th image of class ``c`` (0-based)."""
    return f"ILSVRC2012_val_{k * CLASSES + c + 1:08d}.JPEG"


def jpeg_of(number: int) -> bytes:
    """The JPEG of image ``number`` (seeded by it): a smooth random colour field plus noise, at a size drawn
    from :data:`PHOTO_LIKE_SIZES` (the largest ones cut to the noise tile)."""
    rng = np.random.default_rng(number)
    w, h = PHOTO_LIKE_SIZES[int(rng.integers(len(PHOTO_LIKE_SIZES)))]
    w, h = min(w, _TILE), min(h, _TILE)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB").resize((w, h), Image.BICUBIC)
    y, x = int(rng.integers(0, _TILE - h + 1)), int(rng.integers(0, _TILE - w + 1))
    pixels = np.clip(np.asarray(coarse, dtype=np.float32) + _tile()[y:y + h, x:x + w], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def _write_class(args) -> int:
    root, wnid, c, start, stop = args
    folder = Path(root) / "val" / wnid
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for k in range(start, stop):
        path = folder / image_name(k, c)
        if path.is_file():
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(jpeg_of(k * CLASSES + c + 1))
        os.replace(tmp, path)  # a file is whole or absent: an interrupted build resumes
        written += 1
    return written


def ensure_scale_set(root: Path, per_class: int, workers: int = 1, classes: int = CLASSES, log=None) -> dict:
    """``root/val/<wnid>/`` with at least ``per_class`` images in each of the first ``classes`` ImageNet classes
    (missing files written, ``workers`` processes); what it holds (``scale.json``: images, bytes)."""
    from cvt_port.labels import imagenet_wnids

    root = Path(root)
    record = root / "scale.json"
    done = json.loads(record.read_text()) if record.is_file() else {}
    if done.get("per_class", 0) >= per_class and done.get("classes") == classes:
        return done
    wnids = imagenet_wnids()[:classes]
    jobs = [(str(root), w, c, 0, per_class) for c, w in enumerate(wnids)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = sum(pool.map(_write_class, jobs, chunksize=8))
    else:
        written = sum(map(_write_class, jobs))
    files = [p for w in wnids for p in (root / "val" / w).iterdir() if p.suffix == ".JPEG"]
    done = {"classes": classes, "per_class": per_class, "images": len(files),
            "bytes": sum(p.stat().st_size for p in files), "written_now": written}
    record.write_text(json.dumps(done))
    if log:
        log(f"scale set {root}: {done['images']} images, {done['bytes'] / 2**30:.2f} GiB ({written} written now)")
    return done


def linked_set(source: Path, dest: Path, per_class: int, classes: int = CLASSES) -> Path:
    """``dest/val/<wnid>/``: the first ``per_class`` images of each class of :func:`ensure_scale_set`'s
    ``source``, as hard links (symbolic links where hard links cannot be made); made once."""
    from cvt_port.labels import imagenet_wnids

    dest = Path(dest)
    marker = dest / "linked.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"per_class": per_class, "classes": classes}:
        return dest
    for c, w in enumerate(imagenet_wnids()[:classes]):
        folder = dest / "val" / w
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            src, target = Path(source) / "val" / w / image_name(k, c), folder / image_name(k, c)
            if target.exists():
                continue
            try:
                os.link(src, target)
            except OSError:
                os.symlink(src.resolve(), target)
    marker.write_text(json.dumps({"per_class": per_class, "classes": classes}))
    return dest
