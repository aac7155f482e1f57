"""The two preprocessing modes the harness can evaluate with, and the normalisation they share.

* ``release``: :class:`ReleaseTransform` reproduces the original release's evaluation
  (spec section 5: torchvision transforms on PIL images) with PIL alone, rule for rule; the rules are
  :mod:`cvt_port.remote.image_processing_cvt_port`'s, the processor converted folders carry.
* ``hf``: :class:`HFTransform` runs a model folder's own Hugging Face image processor, which
  is what users of the converted model get. At 224 it crops at floor((H - 224) / 2) where the
  release rounds half to even, so a few images are shifted by one pixel (spec section 5).

Both return ``uint8`` tensors of shape (3, H, W): batches travel between processes as bytes
and are normalised on the device with :func:`normalize`, using the :class:`Normalization`
each transform exposes as ``.normalization``.

Colour modes: every image goes through PIL's ``convert("RGB")``, as the release's loader
did: grey levels are replicated, CMYK is converted by PIL's formula, palette images take
their palette colours, and any alpha channel or palette transparency is *dropped* (not
composited on a background), 16-bit grey is clipped at 255. EXIF orientation is not applied
(the release did not either). The ``hf`` mode is given the same RGB image, so the two modes
differ only in geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

# The release's rules live once, in the image processor every converted folder carries.
from cvt_port.remote.image_processing_cvt_port import (  # noqa: F401 (re-exported)
    center_crop_box,
    check_geometry,
    normalize,
    release_geometry,
    shorter_side_size,
    to_rgb,
    to_uint8_chw,
)
from cvt_port.variants import INTERPOLATIONS, Preprocessing

RESAMPLE = {name: Image.Resampling(code) for name, code in INTERPOLATIONS.items()}  # names: cvt_port.variants


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Normalization:
    """``(x * scale - mean) / std`` per channel; scale 1/255 maps bytes to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0 / 255.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return normalize(batch, self.mean, self.std, self.scale)


def release_normalization(pre: Preprocessing) -> Normalization:
    return Normalization(tuple(float(v) for v in pre.mean), tuple(float(v) for v in pre.std))


def hf_normalization(image_processor) -> Normalization:
    """The constants a Hugging Face image processor would apply (identity for steps it skips)."""
    p = image_processor
    scale = float(p.rescale_factor) if getattr(p, "do_rescale", True) else 1.0
    if getattr(p, "do_normalize", True):
        mean, std = _triple(p.image_mean), _triple(p.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Normalization(mean, std, scale)


def _triple(v) -> tuple[float, float, float]:
    if isinstance(v, (int, float)):
        return (float(v),) * 3
    return tuple(float(x) for x in v)


# --------------------------------------------------------------------------- the two modes


class ReleaseTransform:
    """PIL image -> uint8 (3, S, S) tensor exactly as the release evaluated (spec section 5)."""

    mode = "release"

    def __init__(self, pre: Preprocessing):
        if pre.resize not in ("shorter_side_then_center_crop", "warp"):
            raise ValueError(f"unknown resize rule {pre.resize!r}")
        if pre.interpolation not in RESAMPLE:
            raise ValueError(f"unknown interpolation {pre.interpolation!r}")
        check_geometry(pre.resize, (pre.img_size, pre.img_size), pre.crop_pct)
        self.pre = pre
        self.normalization = release_normalization(pre)
        self.output_shape = (3, pre.img_size, pre.img_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        pre = self.pre
        size = (pre.img_size, pre.img_size)
        return to_uint8_chw(release_geometry(img, pre.resize, size, pre.crop_pct, RESAMPLE[pre.interpolation]))

    def __repr__(self) -> str:
        return f"ReleaseTransform({self.pre})"


class HFTransform:
    """PIL image -> uint8 (3, H, W) tensor through a Hugging Face image processor.

    The processor runs with ``do_rescale=False, do_normalize=False``, so its output is still
    the resized/cropped bytes; they must be integers in 0..255 (checked) and the processor's
    own constants (``rescale_factor``, ``image_mean``, ``image_std``) are applied later by
    :func:`normalize`, which reproduces the processor's full output to float32 precision.
    """

    mode = "hf"

    def __init__(self, image_processor, code_from: str = "transformers"):
        self.image_processor = image_processor
        self.code_from = code_from
        self.normalization = hf_normalization(image_processor)
        probe = Image.new("RGB", (320, 240), (128, 64, 32))
        self.output_shape = tuple(self(probe).shape)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        out = self.image_processor(to_rgb(img), do_rescale=False, do_normalize=False, return_tensors="pt")
        x = out["pixel_values"][0]
        if x.dtype != torch.uint8:
            if not torch.equal(x, x.round()) or x.min() < 0 or x.max() > 255:
                raise ValueError(
                    f"{type(self.image_processor).__name__} without rescale/normalize gave non-byte values "
                    f"(range {float(x.min())}..{float(x.max())}); cannot ship it as uint8"
                )
            x = x.to(torch.uint8)
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"{type(self.image_processor).__name__} gave shape {tuple(x.shape)}, expected (3, H, W)")
        return x.contiguous()

    def describe(self) -> dict:
        """What report.json records: the processor's class, backend ("pil", "torchvision") and code's origin."""
        return {"class": type(self.image_processor).__name__,
                "backend": getattr(self.image_processor, "backend", None), "code_from": self.code_from}

    def __repr__(self) -> str:
        return f"HFTransform({type(self.image_processor).__name__})"
