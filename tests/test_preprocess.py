"""Preprocessing, pixel for pixel, on 100 generated photo-like images of every mode (always), on the 100 real
ImageNet photos of ../shared/data (in addition, when that folder is beside the repository, as in CI), and on
synthetic images of every mode.

The release rule is checked against a second implementation written here with different
arithmetic (exact fractions, integer floor division, round-half-even by parity, numpy slicing);
the Hugging Face mode against the processor's own normalised output.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from cvt_port.hf import make_image_processor
from cvt_port.variants import get_variant
from evaluate.pixels.preprocess import (
    HFTransform,
    Normalization,
    ReleaseTransform,
    hf_normalization,
    normalize,
    release_normalization,
)
from imagegen import SIZES, synthetic_image, write_image, write_photo_like_set

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared/data/imagenet-sample-100"
# The photo sets the photo-based checks run on: generated always; the real photos too when they are here.
PHOTO_SETS = ["generated"] + (["real"] if SAMPLE_DIR.is_dir() else [])


# --------------------------------------------------------------------------- independent reference


def half_even_half(diff: int) -> int:
    """round(diff / 2) with ties to even, by parity: an odd diff = 2k + 1 rounds to k when k is
    even (diff % 4 == 1) and to k + 1 when k is odd (diff % 4 == 3)."""
    return (diff + (diff % 4 == 3)) // 2


def independent_release(img: Image.Image, img_size: int, crop_pct: float, resize: str) -> np.ndarray:
    """uint8 (3, S, S) by the spec's rules, computed differently from evaluate.pixels.preprocess."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    if resize == "warp":
        out = rgb.resize((img_size, img_size), Image.Resampling.BICUBIC, box=(0, 0, w, h))
        return np.asarray(out).transpose(2, 0, 1)
    target = math.floor(Fraction(img_size) / Fraction(str(crop_pct)))  # int(224 / 0.875) = 256
    if w <= h:
        nw, nh = target, (target * h) // w
    else:
        nw, nh = (target * w) // h, target
    arr = np.asarray(rgb.resize((nw, nh), Image.Resampling.BICUBIC, box=(0, 0, w, h)))
    top, left = half_even_half(nh - img_size), half_even_half(nw - img_size)
    return arr[top : top + img_size, left : left + img_size].transpose(2, 0, 1)


def floor_crop(img: Image.Image, img_size: int, crop_pct: float) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The same resize cropped at floor offsets (Hugging Face's rule); also both offset pairs."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    target = math.floor(Fraction(img_size) / Fraction(str(crop_pct)))
    nw, nh = (target, (target * h) // w) if w <= h else ((target * w) // h, target)
    arr = np.asarray(rgb.resize((nw, nh), Image.Resampling.BICUBIC))
    ftop, fleft = (nh - img_size) // 2, (nw - img_size) // 2
    rtop, rleft = half_even_half(nh - img_size), half_even_half(nw - img_size)
    return arr[ftop : ftop + img_size, fleft : fleft + img_size].transpose(2, 0, 1), (ftop, fleft), (rtop, rleft)


def test_half_even_rule_matches_python_round():
    for diff in range(0, 400):
        assert half_even_half(diff) == int(round(diff / 2.0)), diff


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=PHOTO_SETS)
def photos(request, tmp_path_factory) -> list[tuple[str, Image.Image]]:
    """100 image files, decoded: the generated photo-like set, or the real ImageNet photos."""
    if request.param == "generated":
        files = write_photo_like_set(tmp_path_factory.mktemp("photo-like"))
    else:
        files = sorted(SAMPLE_DIR.glob("val/*/*.JPEG"))
        assert len(files) == 100, (
            f"expected the 100 real ImageNet photos in {SAMPLE_DIR}/val/<wnid>/*.JPEG (the shared data folder "
            f"beside the repository); found {len(files)}"
        )
    out = []
    for f in files:
        img = Image.open(f)
        img.load()
        out.append((f.name, img))
    return out


@pytest.fixture(scope="module")
def saved_processors(tmp_path_factory):
    """Each variant's processor saved with save_pretrained and loaded back with AutoImageProcessor."""
    out = {}
    for name in ("cvt-13-224", "cvt-13-384"):
        folder = tmp_path_factory.mktemp(name)
        make_image_processor(get_variant(name)).save_pretrained(folder)
        out[name] = AutoImageProcessor.from_pretrained(folder)
    return out


@pytest.fixture(scope="module")
def outputs(photos, saved_processors):
    """Release- and HF-mode uint8 tensors of every photo, per variant (computed once)."""
    res = {}
    for name, proc in saved_processors.items():
        rel, hf = ReleaseTransform(get_variant(name).preprocessing), HFTransform(proc)
        res[name] = (rel, hf, [rel(img) for _, img in photos], [hf(img) for _, img in photos])
    return res


# --------------------------------------------------------------------------- (a) release rule


@pytest.mark.parametrize("name", ["cvt-13-224", "cvt-13-384"])
def test_release_transform_matches_independent_implementation(name, photos, outputs):
    pre = get_variant(name).preprocessing
    _, _, rel, _ = outputs[name]
    for (fname, img), ours in zip(photos, rel):
        ref = independent_release(img, pre.img_size, pre.crop_pct, pre.resize)
        assert ours.dtype == torch.uint8 and tuple(ours.shape) == (3, pre.img_size, pre.img_size), fname
        assert np.array_equal(ours.numpy(), ref), f"{name}: {fname} differs from the independent implementation"


def test_release_transform_on_varied_synthetic_sizes():
    """Sizes chosen to hit both tie directions of the crop and a shorter side already 256."""
    pre = get_variant("cvt-13-224").preprocessing
    t = ReleaseTransform(pre)
    sizes = SIZES + [(256, 291), (291, 256), (256, 256), (300, 257), (257, 259), (1000, 333), (33, 500)]
    for k, size in enumerate(sizes):
        img = synthetic_image(size, seed=k)
        assert np.array_equal(t(img).numpy(), independent_release(img, 224, pre.crop_pct, pre.resize)), size


def test_release_transform_is_not_the_floor_crop():
    """A size where round-half-even and floor disagree must give the round-half-even crop."""
    pre = get_variant("cvt-13-224").preprocessing
    img = synthetic_image((256, 291), seed=3)  # H - 224 = 67 = 2*33 + 1: round -> 34, floor -> 33
    ours = ReleaseTransform(pre)(img).numpy()
    floor, (ftop, _), (rtop, _) = floor_crop(img, 224, pre.crop_pct)
    assert (ftop, rtop) == (33, 34)
    assert not np.array_equal(ours, floor)


# --------------------------------------------------------------------------- (b) HF mode


@pytest.mark.parametrize("name", ["cvt-13-224", "cvt-13-384"])
def test_hf_transform_equals_the_processor_output(name, photos, saved_processors, outputs):
    proc = saved_processors[name]
    _, hf, _, ours = outputs[name]
    assert hf.normalization == hf_normalization(proc)
    worst = 0.0
    for (fname, img), x in zip(photos, ours):
        theirs = proc(img.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        mine = hf.normalization(x)
        assert mine.shape == theirs.shape, fname
        worst = max(worst, (mine - theirs.float()).abs().max().item())
    assert worst < 1e-5, f"{name}: max |difference| {worst}"


def test_hf_transform_rejects_non_integral_output():
    class Fractional:
        rescale_factor, image_mean, image_std = 1 / 255, [0.5] * 3, [0.5] * 3

        def __call__(self, img, **kwargs):
            return {"pixel_values": torch.full((1, 3, 8, 8), 0.5)}

    with pytest.raises(ValueError, match="non-byte"):
        HFTransform(Fractional())


# --------------------------------------------------------------------------- (c) how the two modes differ


def test_modes_agree_except_one_pixel_crop_shift_at_224(photos, outputs):
    rel_t, hf_t, rel, hf = outputs["cvt-13-224"]
    identical, shifted, worst = 0, [], 0.0
    for (fname, img), a, b in zip(photos, rel, hf):
        if torch.equal(a, b):
            identical += 1
            continue
        floor, f_off, r_off = floor_crop(img, 224, 0.875)
        assert np.array_equal(b.numpy(), floor), f"{fname}: HF output is not the floor-offset crop"
        steps = [r - f for r, f in zip(r_off, f_off)]
        assert sorted(steps) in ([0, 1], [1, 1]), f"{fname}: crop offsets {r_off} vs {f_off} are not a one-pixel shift"
        shifted.append(fname)
        worst = max(worst, (rel_t.normalization(a) - hf_t.normalization(b)).abs().max().item())
    print(f"\n224: {identical}/{len(photos)} identical, {len(shifted)} one-pixel crop shifts, "
          f"max |diff| after normalisation {worst:.4f}")
    assert identical + len(shifted) == len(photos) == 100
    assert identical >= 80, f"only {identical} of 100 photos identical at 224"
    assert shifted, "no photo took the round-half-even crop where floor differs: the set does not exercise it"


def test_modes_identical_at_384(photos, outputs):
    _, _, rel, hf = outputs["cvt-13-384"]
    differing = [fname for (fname, _), a, b in zip(photos, rel, hf) if not torch.equal(a, b)]
    print(f"\n384: {len(photos) - len(differing)}/{len(photos)} identical")
    assert differing == []


# --------------------------------------------------------------------------- (d) colour modes


def _expected_rgb(img: Image.Image) -> np.ndarray:
    """(h, w, 3) uint8 an independent reading of what convert("RGB") must give for these modes."""
    a = np.asarray(img)
    if img.mode in ("RGBA",):
        return a[..., :3]  # alpha dropped, not composited
    if img.mode == "LA":
        return np.repeat(a[..., :1], 3, axis=-1)
    if img.mode == "L":
        return np.repeat(a[..., None], 3, axis=-1)
    if img.mode == "I;16":
        return np.repeat(np.minimum(a, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if img.mode == "P":
        pal = np.asarray(img.getpalette(), dtype=np.uint8).reshape(-1, 3)
        return pal[a]  # palette colours; transparency ignored
    return np.asarray(img.convert("RGB"))  # CMYK: PIL's own formula


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "I;16"])
def test_modes_convert_to_rgb(mode, tmp_path, saved_processors):
    path = write_image(tmp_path / f"img.{'jpg' if mode in ('L', 'CMYK') else 'png'}", (75, 52), mode, seed=5)
    img = Image.open(path)
    img.load()
    assert img.mode == mode
    rgb = img.convert("RGB")
    assert np.array_equal(np.asarray(rgb), _expected_rgb(img))
    for name in ("cvt-13-224", "cvt-13-384"):
        pre = get_variant(name).preprocessing
        rel, hf = ReleaseTransform(pre), HFTransform(saved_processors[name])
        for t in (rel, hf):
            out = t(img)
            assert out.dtype == torch.uint8 and tuple(out.shape) == (3, pre.img_size, pre.img_size), (mode, name)
            assert torch.equal(out, t(rgb)), (mode, name, t)
        assert np.array_equal(rel(img).numpy(), independent_release(rgb, pre.img_size, pre.crop_pct, pre.resize))


# --------------------------------------------------------------------------- normalisation


def test_normalize_matches_float64_formula():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 3, 5, 4), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = (x / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    got = normalize(torch.from_numpy(x), mean, std)
    assert got.dtype == torch.float32
    assert np.abs(got.numpy() - ref).max() < 1e-5
    single = normalize(torch.from_numpy(x[0]), mean, std)
    assert torch.equal(single, got[0])
    assert torch.equal(Normalization(mean, std)(torch.from_numpy(x)), got)


def test_release_normalisation_is_bit_exact_torchvision_style():
    """ToTensor divides by 255, Normalize subtracts then divides: the same float32 operations."""
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    pre = get_variant("cvt-13-224").preprocessing
    norm = release_normalization(pre)
    expected = x.float().div(255)
    for c in range(3):
        expected[:, c] = expected[:, c].sub(pre.mean[c]).div(pre.std[c])
    assert torch.equal(norm(x), expected)


def test_hf_normalization_reads_the_processor(saved_processors):
    proc = saved_processors["cvt-13-224"]
    n = hf_normalization(proc)
    assert n.scale == pytest.approx(proc.rescale_factor)
    assert n.mean == tuple(proc.image_mean) and n.std == tuple(proc.image_std)
