"""Stock Hugging Face loaders on a converted folder (issue 14), offline, on local folders.

With ``trust_remote_code=True`` the folder's own files (copies of :mod:`cvt_port.remote`) make
``AutoModelForImageClassification``, ``AutoImageProcessor`` and ``pipeline`` compute what the original
computed: logits within 1e-5 of the reference implementation, pixel values identical to the release
protocol (224: shorter side + round-half-even centre crop; 384: warp) on photos and odd colour modes,
pipeline top-5 equal to the original's softmax top-5. Without it the stock classes still load.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from imagegen import synthetic_image, write_photo_like_set
from PIL import Image

import cvt_port
from cvt_port import remote
from cvt_port.conversion import PARITY_TOLERANCE
from cvt_port.reference import OriginalCvT, randomize_
from cvt_port.variants import TESTING_CONFIGS_DIR, get_variant, load_variant_file
from test_preprocess import independent_release

PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-sample-100" / "val"
ODD_MODES = ["L", "LA", "P", "RGBA", "CMYK", "I;16"]
# sizes whose resized longer side makes (L - 224) / 2 end in .5 with an odd floor (round and floor differ),
# plus portrait, landscape, square and small images (upscaled)
SIZES = [(259, 256), (256, 259), (333, 500), (500, 375), (640, 427), (300, 300), (97, 131), (1023, 685)]


def tiny_variant(preprocessing_of: str):
    """The tiny ImageNet-head CvT with the evaluation preprocessing of release variant ``preprocessing_of``."""
    tiny = load_variant_file(TESTING_CONFIGS_DIR / "tiny-imagenet.yaml")
    return dataclasses.replace(tiny, preprocessing=get_variant(preprocessing_of).preprocessing)


@pytest.fixture(scope="module", params=["cvt-13-224", "cvt-13-384"])
def folder(request, tmp_path_factory):
    """(converted folder, reference model, variant): a random tiny CvT with a release variant's preprocessing."""
    variant = tiny_variant(request.param)
    root = tmp_path_factory.mktemp(f"remote-{request.param}")
    model = randomize_(OriginalCvT(variant.architecture), seed=3).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)  # spread the logits so top-5 is decisive
    torch.save(model.state_dict(), root / "tiny.pth")
    out = cvt_port.convert(root / "tiny.pth", root / f"cvt-port-{request.param}", variant=variant, log=lambda m: None)
    return out, model, variant


@pytest.fixture(scope="module")
def photo_like(tmp_path_factory) -> list[Image.Image]:
    """tests/imagegen's 100 generated photo-like files (ImageNet's sizes, every colour mode), decoded."""
    return [Image.open(p) for p in write_photo_like_set(tmp_path_factory.mktemp("photo-like"))]


def photos(n_synthetic: int = len(SIZES)) -> list[Image.Image]:
    """Real ImageNet photos when the shared sample is there, generated images of tie-making sizes always."""
    imgs = [synthetic_image(size, "RGB", seed=i) for i, size in enumerate(SIZES[:n_synthetic])]
    if PHOTOS.is_dir():
        imgs += [Image.open(p) for p in sorted(PHOTOS.glob("*/*.JPEG"))]
    return imgs


def release_pixels(img: Image.Image, variant) -> torch.Tensor:
    """The release protocol computed independently of cvt_port (test_preprocess's rules, then
    torchvision's ToTensor and Normalize formulas)."""
    import warnings

    p = variant.preprocessing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # palette transparency: dropped, as the release did
        arr = independent_release(img, p.img_size, p.crop_pct, p.resize)
    x = torch.from_numpy(np.ascontiguousarray(arr)).float().div(255)
    return x.sub(torch.tensor(p.mean).view(3, 1, 1)).div(torch.tensor(p.std).view(3, 1, 1))


def test_folder_carries_the_package_files_and_names_them(folder):
    out, _, _ = folder
    for name in remote.REMOTE_FILES:
        assert (out / name).read_bytes() == (remote.HERE / name).read_bytes(), name
    assert json.loads((out / "config.json").read_text())["auto_map"] == remote.MODEL_AUTO_MAP
    assert json.loads((out / "preprocessor_config.json").read_text())["auto_map"] == remote.PROCESSOR_AUTO_MAP
    assert remote.is_package_copy(out)


def test_a_changed_remote_file_is_not_the_package_copy(folder, tmp_path):
    out, _, _ = folder
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert remote.is_package_copy(copy)
    path = copy / remote.MODELING_FILE
    path.write_text(path.read_text() + "\nprint('hello')\n")
    assert not remote.is_package_copy(copy)
    path.unlink()
    assert not remote.is_package_copy(copy)


def test_auto_model_with_remote_code_matches_the_original(folder):
    from transformers import AutoModelForImageClassification

    out, reference, variant = folder
    model = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True).eval()
    assert type(model).__name__ == "CvtPortForImageClassification"
    assert not type(model).__module__.startswith("cvt_port")  # the folder's copy ran, not the package
    s = variant.preprocessing.img_size
    x = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(pixel_values=x).logits - reference(x)).abs().max().item()
    assert diff <= PARITY_TOLERANCE


def test_without_remote_code_the_stock_classes_load_and_drift(folder):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, CvtForImageClassification

    out, reference, variant = folder
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert type(model) is CvtForImageClassification
    s = variant.preprocessing.img_size
    x = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        drift = (model(pixel_values=x).logits - reference(x)).abs().max().item()
    assert drift > 100 * PARITY_TOLERANCE  # exact GELU: the cost the model card states
    processor = AutoImageProcessor.from_pretrained(out)
    assert type(processor).__name__.startswith("ConvNextImageProcessor")


def test_auto_image_processor_with_remote_code_is_the_release_protocol(folder, photo_like):
    from transformers import AutoImageProcessor

    out, _, variant = folder
    processor = AutoImageProcessor.from_pretrained(out, trust_remote_code=True)
    assert type(processor).__name__ == "CvtPortImageProcessor" and processor.backend == "pil"
    assert not type(processor).__module__.startswith("cvt_port")
    imgs = photos() + photo_like + [synthetic_image(size, mode, seed=7) for mode in ODD_MODES for size in SIZES[:3]]
    for img in imgs:
        got = processor(img, return_tensors="pt")["pixel_values"][0]
        assert got.dtype == torch.float32
        assert torch.equal(got, release_pixels(img, variant)), (img.mode, img.size)


def test_what_the_stock_processor_does(folder):
    """What the remote processor fixes: at 224 ConvNeXt floors the crop offset (259 -> offset 17.5:
    the release takes 18, ConvNeXt 17); at 384 both warp and agree (PIL backend); grey images fail."""
    from transformers import AutoImageProcessor

    out, _, variant = folder
    img = synthetic_image((259, 256), "RGB", seed=0)
    stock = AutoImageProcessor.from_pretrained(out)(img, return_tensors="pt")["pixel_values"][0]
    crops = variant.preprocessing.resize == "shorter_side_then_center_crop"
    assert torch.equal(stock, release_pixels(img, variant)) is not crops
    with pytest.raises(ValueError):
        AutoImageProcessor.from_pretrained(out)(synthetic_image((259, 256), "L"), return_tensors="pt")


def test_pipeline_with_remote_code_gives_the_original_top5(folder):
    from transformers import pipeline

    out, reference, variant = folder
    classify = pipeline("image-classification", model=str(out), trust_remote_code=True)
    assert type(classify.model).__name__ == "CvtPortForImageClassification"
    labels = json.loads((out / "config.json").read_text())["id2label"]
    for img in photos(n_synthetic=4)[:12]:
        got = classify(img, top_k=5)
        with torch.no_grad():
            probs = reference(release_pixels(img, variant)[None]).softmax(-1)[0]
        top = probs.topk(5)
        assert [g["label"] for g in got] == [labels[str(i)] for i in top.indices.tolist()]
        np.testing.assert_allclose([g["score"] for g in got], top.values.numpy(), rtol=0, atol=1e-6)


def test_model_card_gives_the_recipe_first_and_the_stock_cost(folder):
    out, _, _ = folder
    card = (out / "README.md").read_text()
    parity = json.loads((out / "conversion.json").read_text())["parity"]
    recipe = card.index("trust_remote_code=True")
    assert recipe < card.index("| fact | value |") and recipe < card.index("cvt_port.load_model")
    assert f"**{parity['stock_gelu_max_abs_logit_diff']:.3g}**" in card
    assert parity["stock_gelu_max_abs_logit_diff"] > 100 * parity["max_abs_logit_diff"] + 1e-4
