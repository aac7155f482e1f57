"""benchmarks/synthetic/: the one maker of random release checkpoints and of photo-like images that tests and benchmarks
share. A plain random checkpoint is the release format (a state dict OriginalCvT loads); an image-dependent one
gives different photos different classes, which the figures of the benchmarks and tests rely on."""

from __future__ import annotations

import torch

from benchmarks.workspace import tiny_config
from cvt_port.reference import OriginalCvT
from cvt_port.variants import get_variant
from benchmarks.synthetic.checkpoints import random_reference, save_release_checkpoint, spread_head_
from benchmarks.synthetic.photos import synthetic_rgb


def _top1(model, variant, seeds) -> list[int]:
    pre = variant.preprocessing
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    x = torch.stack([torch.from_numpy(synthetic_rgb((pre.img_size,) * 2, s)).permute(2, 0, 1) for s in seeds])
    with torch.no_grad():
        return model(x.float().div(255).sub(mean).div(std)).argmax(-1).tolist()


def test_photos_differ_per_seed_and_are_reproducible():
    a, b = synthetic_rgb((40, 30), 1), synthetic_rgb((40, 30), 2)
    assert a.shape == (30, 40, 3) and a.dtype.name == "uint8"
    assert (synthetic_rgb((40, 30), 1) == a).all() and abs(a.astype(int) - b.astype(int)).mean() > 20
    assert a.std() > 20  # not a flat image


def test_release_checkpoint_loads_back_and_an_image_dependent_one_spreads_its_classes(tmp_path):
    variant = get_variant(str(tiny_config(tmp_path)))
    saved = save_release_checkpoint(variant, tmp_path / "plain.pth", seed=3)
    state = torch.load(tmp_path / "plain.pth", weights_only=True)
    loaded = OriginalCvT(variant.architecture).eval()
    loaded.load_state_dict(state)  # exactly the release format: a plain state dict, every key
    assert set(state) == set(saved.state_dict()) and all(torch.equal(state[k], v) for k, v in saved.state_dict().items())
    photos = range(100, 116)  # other seeds than spread_head_'s probe
    assert len(set(_top1(saved, variant, photos))) <= 2  # randomize_ alone: (nearly) one class everywhere
    model = random_reference(variant, seed=3, image_dependent=True)
    facts = spread_head_(model, variant)
    assert facts["probe_distinct_top1"] >= 8
    assert len(set(_top1(model, variant, photos))) >= 6
