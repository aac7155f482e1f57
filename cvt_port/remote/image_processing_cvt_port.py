"""The original CvT release's evaluation preprocessing, exactly, as a Hugging Face image processor.

The release evaluated with torchvision transforms on PIL images (``pil_loader``'s ``convert("RGB")``,
``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize``). This module redoes each rule with PIL alone:

* colour: PIL's ``convert("RGB")`` for every mode (L, LA, P, RGBA, CMYK, 16-bit ...): grey levels are
  replicated, CMYK goes through PIL's formula, palettes take their colours, alpha is dropped (not
  composited), 16-bit grey is clipped at 255;
* 224 models: the shorter side to ``int(size / crop_pct)`` (the longer side truncated, aspect kept),
  bicubic, then a centre crop whose offsets are ``int(round((H - size) / 2.0))`` (halves to even);
* 384 models: a warp straight to size x size, bicubic;
* ``/ 255`` then ``(x - mean) / std`` in float32, in that order.

Transformers' ConvNeXt processor floors the crop offset (a one-pixel shift on about 1 photo in 10),
fails on grey images, and switches to its torchvision backend (antialiased tensor resize) whenever
torchvision is importable; this processor is PIL only, whatever is installed.

The settings are read as ConvNeXt's and ViT's processors write them, so one preprocessor_config.json
serves this class and the stock one: ``size = {"shortest_edge": S}`` crops at S < 384 and warps at
S >= 384 (as the release did for its 224 and 384 models); ``size = {"height": H, "width": W}`` warps.

This file is copied into every folder written by cvt-port (``auto_map`` in preprocessor_config.json),
where ``AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)`` loads it; cvt-port's
``--preprocessing release`` uses this very module. Self-contained: transformers, torch, PIL, numpy.
"""

import warnings

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WARP_FROM = 384  # ConvNeXt's rule, the release's too: shortest_edge >= 384 warps instead of cropping
CROP = "shorter_side_then_center_crop"
WARP = "warp"


# --------------------------------------------------------------------------- the release's rules


def to_rgb(img: Image.Image) -> Image.Image:
    """PIL's ``convert("RGB")``, as the release's loader did (see the module docstring)."""
    if img.mode == "RGB":
        return img
    with warnings.catch_warnings():
        # "Palette images with Transparency expressed in bytes should be converted to RGBA":
        # transparency is dropped on purpose, as the release did.
        warnings.simplefilter("ignore", UserWarning)
        return img.convert("RGB")


def shorter_side_size(width: int, height: int, short: int) -> tuple:
    """(w, h) after torchvision's ``Resize(short)``: shorter side ``short``, longer side
    ``int(short * long / short_side)`` (truncated), aspect ratio otherwise kept."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def center_crop_box(width: int, height: int, size: int) -> tuple:
    """torchvision's ``CenterCrop(size)`` box: offsets ``int(round((H - size) / 2.0))`` and
    ``int(round((W - size) / 2.0))`` with Python's round (halves to even)."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def check_geometry(rule: str, size: tuple, crop_pct: float) -> None:
    if rule not in (CROP, WARP):
        raise ValueError(f"unknown resize rule {rule!r}")
    if rule == CROP and (size[0] != size[1] or int(size[0] / crop_pct) < size[0]):
        raise ValueError(f"crop_pct {crop_pct} with size {size}: the crop would fall outside the image")


def release_geometry(img: Image.Image, rule: str, size: tuple, crop_pct: float, resample: int) -> Image.Image:
    """An image in RGB at (height, width) ``size`` by the release's rule ``rule`` (``CROP`` or ``WARP``)."""
    img = to_rgb(img)
    height, width = size
    if rule == WARP:
        return img.resize((width, height), resample)
    w, h = shorter_side_size(img.width, img.height, int(height / crop_pct))
    return img.resize((w, h), resample).crop(center_crop_box(w, h, height))


def to_uint8_chw(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a contiguous uint8 (3, H, W) tensor."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def normalize(batch: torch.Tensor, mean, std, scale: float = 1.0 / 255.0) -> torch.Tensor:
    """float32 ``(x * scale - mean) / std`` of a uint8 (B, 3, H, W) or (3, H, W) tensor, on its device.

    With the default scale it divides by 255 (as torchvision's ``ToTensor`` did) rather than
    multiplying by 1/255, so the result matches the release to the last bit.
    """
    x = batch.to(torch.float32)
    x = x.div(255.0) if abs(scale - 1.0 / 255.0) < 1e-12 else x.mul(float(scale))
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).reshape(shape)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).reshape(shape)
    return x.sub(m).div(s)


# --------------------------------------------------------------------------- the processor


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        image = image.numpy()
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.transpose(1, 2, 0)  # channels first -> last
        return Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    raise TypeError(
        f"CvtPortImageProcessor takes PIL images (or uint8 arrays); got {type(image).__name__}"
        + (f" of dtype {image.dtype}" if hasattr(image, "dtype") else "")
        + ": the release protocol is defined on 8-bit images"
    )


class CvtPortImageProcessor(BaseImageProcessor):
    """The CvT release's evaluation preprocessing (PIL only; see the module docstring)."""

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: dict | None = None,
        crop_pct: float | None = None,
        resample: int = Image.Resampling.BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        kwargs.pop("processor_class", None)
        super().__init__(**kwargs)
        self.do_resize = do_resize
        self.size = dict(size) if size is not None else {"shortest_edge": 224}
        self.crop_pct = 224 / 256 if crop_pct is None else float(crop_pct)
        self.resample = int(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        rule, hw = self.geometry()
        check_geometry(rule, hw, self.crop_pct)

    @property
    def backend(self) -> str:
        return "pil"

    def geometry(self) -> tuple:
        """(rule, (height, width)) read from ``size`` as ConvNeXt's / ViT's processors write it."""
        s = self.size
        if "height" in s and "width" in s:
            return WARP, (int(s["height"]), int(s["width"]))
        if "shortest_edge" in s:
            edge = int(s["shortest_edge"])
            return (WARP if edge >= WARP_FROM else CROP), (edge, edge)
        raise ValueError(f"size {s}: expected {{'shortest_edge': S}} or {{'height': H, 'width': W}}")

    def image_bytes(self, image) -> torch.Tensor:
        """One image as uint8 (3, H, W): RGB conversion and the release's resize/crop."""
        img = _as_pil(image)
        if self.do_resize:
            rule, hw = self.geometry()
            img = release_geometry(img, rule, hw, self.crop_pct, self.resample)
        else:
            img = to_rgb(img)
        return to_uint8_chw(img)

    def preprocess(self, images, do_rescale: bool | None = None, do_normalize: bool | None = None,
                   return_tensors=None, **kwargs) -> BatchFeature:
        """``pixel_values`` (B, 3, H, W): float32, normalised as the release did; uint8 when both
        ``do_rescale`` and ``do_normalize`` are False (the bytes after resize and crop)."""
        unknown = set(kwargs) - {"data_format", "input_data_format", "device"}
        if unknown:
            raise TypeError(f"CvtPortImageProcessor got unexpected arguments {sorted(unknown)}")
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        if not isinstance(images, (list, tuple)):
            images = [images]
        batch = torch.stack([self.image_bytes(im) for im in images])
        if do_rescale or do_normalize:
            scale = self.rescale_factor if do_rescale else 1.0
            mean, std = (self.image_mean, self.image_std) if do_normalize else ((0.0,) * 3, (1.0,) * 3)
            batch = normalize(batch, mean, std, scale)
        if return_tensors in ("pt", "torch"):
            return BatchFeature(data={"pixel_values": batch}, tensor_type="pt")
        data = batch.numpy()
        return BatchFeature(data={"pixel_values": data if return_tensors == "np" else list(data)},
                            tensor_type=return_tensors)
