"""The bundled default assets (digits validation PNGs, tiny CvT, its config) are sound.

``python -m evaluate`` with no arguments relies on these files, so the tests check them
independently of the build script: the checkpoint loads strictly into the reference model,
its accuracy on the shipped PNGs (with preprocessing re-implemented here from the config) is
exactly the recorded one, and the shipped PNGs are what the seeded split reproduces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvt_port.reference import OriginalCvT
from cvt_port.variants import load_variant_file, release_variants

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "evaluate" / "bundled"
CHECKPOINT = BUNDLED / "cvt-tiny-digits.pth"
DIGITS = BUNDLED / "digits"
CONFIG = ROOT / "configs" / "cvt-tiny-digits.yaml"


def _pngs(root: Path) -> list[Path]:
    return sorted((root / "val").glob("*/*.png"))


@pytest.fixture(scope="module")
def variant():
    return load_variant_file(CONFIG)


@pytest.fixture(scope="module")
def model(variant):
    m = OriginalCvT(variant.architecture)
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    m.load_state_dict(state, strict=True)
    return m.eval()


def test_shipped_files_exist_and_are_small():
    assert CHECKPOINT.is_file() and CONFIG.is_file()
    assert CHECKPOINT.stat().st_size <= 3 * 1024 * 1024
    files = [p for p in DIGITS.rglob("*") if p.is_file()]
    assert files, "no bundled digits images"
    assert sum(p.stat().st_size for p in files) <= 500 * 1024
    assert {p.parent.name for p in _pngs(DIGITS)} == {str(d) for d in range(10)}


def test_config_describes_a_bundled_not_released_variant(variant):
    assert variant.name == "cvt-tiny-digits"
    assert variant.release_file is None and variant.hub_id is None
    assert variant.name not in release_variants()
    assert variant.class_names() == [str(d) for d in range(10)]
    assert variant.architecture.num_classes == 10
    assert variant.preprocessing.resize == "warp" and variant.preprocessing.interpolation == "bicubic"
    assert variant.reference["num_samples"] == len(_pngs(DIGITS))


def test_architecture_can_be_built_in_hugging_face(variant):
    """transformers' CvtStage needs depth[i] > i (it indexes a depth[i]-long list by stage)."""
    from transformers import CvtConfig, CvtForImageClassification

    a = variant.architecture
    config = CvtConfig(
        depth=list(a.depth), num_heads=list(a.num_heads), embed_dim=list(a.embed_dim),
        patch_sizes=list(a.patch_sizes), patch_stride=list(a.patch_stride),
        patch_padding=list(a.patch_padding), cls_token=list(a.cls_token), num_labels=a.num_classes,
    )
    CvtForImageClassification(config)


def test_checkpoint_is_release_format_and_trained(variant):
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert isinstance(state, dict)
    assert set(state) == set(OriginalCvT(variant.architecture).state_dict())
    for key, t in state.items():
        if key.endswith("num_batches_tracked"):
            assert int(t) > 0, f"{key}: BatchNorm never ran in train mode"
        else:
            assert t.dtype == torch.float32, key
    # Trained running statistics, not the defaults (mean 0, var 1).
    var = state["stage2.blocks.0.attn.conv_proj_k.bn.running_var"]
    mean = state["stage2.blocks.0.attn.conv_proj_k.bn.running_mean"]
    assert not torch.allclose(var, torch.ones_like(var)) and not torch.allclose(mean, torch.zeros_like(mean))


def _load(path: Path, pre) -> torch.Tensor:
    """The config's evaluation preprocessing, written here independently of the build script."""
    img = Image.open(path).convert("RGB").resize((pre.img_size, pre.img_size), Image.Resampling.BICUBIC)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


@torch.no_grad()
def test_accuracy_on_shipped_images_matches_config(variant, model):
    files = _pngs(DIGITS)
    names = variant.class_names()
    x = torch.stack([_load(p, variant.preprocessing) for p in files])
    y = torch.tensor([names.index(p.parent.name) for p in files])
    logits = model(x)
    top5 = logits.topk(5, dim=1).indices
    top1_pct = 100.0 * int((top5[:, 0] == y).sum()) / len(files)
    top5_pct = 100.0 * int((top5 == y[:, None]).any(dim=1).sum()) / len(files)
    assert top1_pct == variant.reference["top1"]
    assert top5_pct == variant.reference["top5"]
    assert top1_pct >= 90.0


def test_shipped_pngs_are_8x8_grayscale_named_by_label():
    for p in _pngs(DIGITS):
        with Image.open(p) as img:
            assert img.mode == "L" and img.size == (8, 8), p
        assert p.name.startswith(f"{p.parent.name}_"), p


def test_split_export_reproduces_shipped_pngs(tmp_path):
    pytest.importorskip("sklearn")
    from evaluate.bundled.build import export_validation

    written = export_validation(tmp_path)
    shipped = _pngs(DIGITS)
    assert [p.relative_to(tmp_path) for p in written] == [p.relative_to(DIGITS) for p in shipped]
    for new, old in zip(written, shipped):
        assert new.read_bytes() == old.read_bytes(), old.relative_to(DIGITS)
