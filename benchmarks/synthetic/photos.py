"""Photo-like test images: real image files (JPEG/PNG encoded by PIL) of seeded synthetic content.

The content is a smooth random colour field plus noise, its own per seed: resizing and cropping have something
to change, a one-pixel shift shows, and a model whose predictions depend on the image gives different images
different classes (:func:`benchmarks.synthetic.checkpoints.spread_head_` probes it for that). Sizes vary, so aspect-ratio
rules are exercised; :func:`write_photo_like_set` mimics a sample of ImageNet's validation photos.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_rgb(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 for ``size`` = (w, h): a 8x6 grid of random colours, bicubic-upscaled, plus noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB").resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def synthetic_image(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A PIL image in ``mode``: RGB, L, LA, RGBA, CMYK, P (with transparency) or I;16."""
    rgb = Image.fromarray(synthetic_rgb(size, seed), "RGB")
    if mode == "RGB":
        return rgb
    if mode in ("L", "CMYK"):
        return rgb.convert(mode)
    if mode in ("LA", "RGBA"):
        alpha = Image.fromarray(np.random.default_rng(seed + 1).integers(0, 256, size[::-1], dtype=np.uint8), "L")
        img = rgb.convert(mode[:-1])
        img.putalpha(alpha)
        return img
    if mode == "P":
        img = rgb.quantize(colors=16)
        img.info["transparency"] = 3  # palette entry 3 is transparent
        return img
    if mode == "I;16":
        arr = (synthetic_rgb(size, seed)[..., 0].astype(np.uint16) * 300)  # values up to 76,500 clipped to 65,535
        return Image.fromarray(np.minimum(arr, 65535).astype(np.uint16))  # uint16 -> mode I;16
    raise ValueError(mode)


def write_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", seed: int = 0) -> Path:
    """Write a real image file; JPEG for RGB/L/CMYK (whatever the extension says), PNG otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = synthetic_image(size, mode, seed)
    if mode in ("RGB", "L", "CMYK"):
        img.save(path, format="JPEG", quality=90)
    else:
        img.save(path, format="PNG", **({"transparency": 3} if mode == "P" else {}))
    return path


def jpeg_bytes(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    buf = io.BytesIO()
    synthetic_image(size, "RGB", seed).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_imagenet_val(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``root/val/<wnid>/ILSVRC2012_val_<i>.JPEG``: ``n`` RGB JPEGs of ``size`` (seeds ``seed``, ``seed + 1``...)
    under real WordNet ids, two per class, the classes spread over the 1000."""
    from cvt_port.labels import imagenet_wnids

    wnids = imagenet_wnids()
    for i in range(n):
        write_image(Path(root) / "val" / wnids[(i // 2) * 37 % len(wnids)] / f"ILSVRC2012_val_{i + 1:08d}.JPEG",
                    size, seed=seed + i)
    return Path(root)


# 100 sizes (w, h) distributed as in ImageNet's validation set: mostly 500 on the long side with the usual 4:3,
# 3:2 and odd in-between heights, some portrait, a few small, square or large. The centre crop's rounding
# depends only on the size, so these exercise it as real photos do (both tie directions at 224).
PHOTO_LIKE_SIZES = (
    [(500, 375)] * 24 + [(375, 500)] * 7 + [(500, 333)] * 6 + [(333, 500)] * 4 + [(500, 376)] * 2
    + [(500, 332)] * 2 + [(500, 325)] * 2 + [(400, 300)] * 2 + [(600, 450)] * 2
    + [(500, 308), (400, 296), (500, 340), (371, 500), (526, 497), (1152, 864), (500, 478), (250, 206),
       (335, 500), (170, 170), (500, 357), (456, 300), (500, 374), (311, 475), (437, 371), (799, 599),
       (500, 338), (237, 350), (500, 320), (240, 162), (500, 331), (413, 580), (533, 400), (500, 335),
       (909, 768), (500, 339), (230, 160), (275, 348), (360, 360), (334, 500), (220, 180), (500, 354),
       (702, 1094), (468, 315), (106, 150), (500, 334), (550, 412), (422, 500), (500, 390), (250, 188),
       (400, 475), (400, 315), (640, 480), (496, 280), (500, 360), (347, 500), (168, 168), (332, 500),
       (400, 400)]
)
# Every mode a decoder can hand over, spread over the set (the rest RGB JPEG, as most photos are).
PHOTO_LIKE_MODES = ("L", "LA", "P", "RGBA", "CMYK", "I;16")


def write_photo_like_set(root: Path, seed: int = 0) -> list[Path]:
    """100 real image files standing in for a sample of ImageNet validation photos: the sizes of
    :data:`PHOTO_LIKE_SIZES`, every fifth image in one of :data:`PHOTO_LIKE_MODES` (L and CMYK as JPEG, the
    others PNG), the rest RGB JPEG."""
    paths = []
    for k, size in enumerate(PHOTO_LIKE_SIZES):
        mode = PHOTO_LIKE_MODES[(k // 5) % len(PHOTO_LIKE_MODES)] if k % 5 == 2 else "RGB"
        ext = "JPEG" if mode in ("RGB", "L", "CMYK") else "png"
        paths.append(write_image(Path(root) / f"photo_{k:03d}_{mode.replace(';', '')}.{ext}", size, mode, seed=seed + k))
    return paths
