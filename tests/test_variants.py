"""configs/ is the single source of truth for each variant: the spec's table, file by file."""

import pytest

from cvt_port.reference import OriginalCvT
from cvt_port.variants import TESTING_CONFIGS_DIR, all_variants, get_variant, release_variants, variant_files, load_variant_file
from cvt_port.errors import BadInput
import torch

# Spec section 1, copied from the table (the test reads like the spec).
SPEC_TABLE = {
    "CvT-13-224x224-IN-1k.pth": ("microsoft/cvt-13", 224, [1, 2, 10], [1, 3, 6], [64, 192, 384], 81.6, 459),
    "CvT-21-224x224-IN-1k.pth": ("microsoft/cvt-21", 224, [1, 4, 16], [1, 3, 6], [64, 192, 384], 82.5, 731),
    "CvT-13-384x384-IN-1k.pth": ("microsoft/cvt-13-384", 384, [1, 2, 10], [1, 3, 6], [64, 192, 384], 83.0, 459),
    "CvT-21-384x384-IN-1k.pth": ("microsoft/cvt-21-384", 384, [1, 4, 16], [1, 3, 6], [64, 192, 384], 83.3, 731),
    "CvT-13-384x384-IN-22k.pth": ("microsoft/cvt-13-384-22k", 384, [1, 2, 10], [1, 3, 6], [64, 192, 384], 83.3, 459),
    "CvT-21-384x384-IN-22k.pth": ("microsoft/cvt-21-384-22k", 384, [1, 4, 16], [1, 3, 6], [64, 192, 384], 84.9, 731),
    "CvT-w24-384x384-IN-22k.pth": ("microsoft/cvt-w24-384-22k", 384, [2, 2, 20], [3, 12, 16], [192, 768, 1024], 87.6, 833),
}
SPEC_PARAMS_M = {"CvT-13": 20.0, "CvT-21": 31.6, "CvT-W24": 277.3}


def test_every_config_file_loads():
    files = variant_files()
    assert len(files) >= 7
    for f in files + sorted(TESTING_CONFIGS_DIR.glob("*.yaml")):
        v = load_variant_file(f)
        assert v.name == f.stem, f
        assert len(v.architecture.depth) == len(v.architecture.num_heads) == len(v.architecture.embed_dim)
        assert len(v.class_names()) == v.architecture.num_classes


def test_the_seven_release_variants_match_the_spec_table():
    rel = {v.release_file: v for v in release_variants().values()}
    assert set(rel) == set(SPEC_TABLE)
    for fname, (hub, size, depth, heads, dims, top1, nkeys) in SPEC_TABLE.items():
        v = rel[fname]
        a, p = v.architecture, v.preprocessing
        assert (v.hub_id, p.img_size, list(a.depth), list(a.num_heads), list(a.embed_dim)) == (hub, size, depth, heads, dims)
        assert v.reference_top1 == top1 and a.activation == "quick_gelu" and a.num_classes == 1000
        assert list(a.cls_token) == [False, False, True]
        assert (p.interpolation, list(p.mean), list(p.std)) == ("bicubic", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        if size == 224:
            assert (p.resize, p.crop_pct) == ("shorter_side_then_center_crop", 0.875)
        else:
            assert p.resize == "warp"
        with torch.device("meta"):
            sd = OriginalCvT(a).state_dict()
        assert len(sd) == nkeys, fname
        n_params = sum(t.numel() for k, t in sd.items() if not k.endswith("num_batches_tracked"))
        family = "CvT-W24" if "w24" in fname else fname[:6]
        assert int(n_params / 1e5) / 10 == SPEC_PARAMS_M[family], (fname, n_params)  # the table truncates


def test_variant_lookup_by_name_file_and_path():
    v = get_variant("cvt-21-384")
    assert get_variant("CvT-21-384x384-IN-1k.pth") == v
    assert get_variant(str(v.path)).name == "cvt-21-384"
    with pytest.raises(BadInput, match="unknown variant 'cvt-99'"):
        get_variant("cvt-99")
    assert set(all_variants()) >= set(release_variants())


def test_malformed_config_is_one_line_error(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\narchitecture: {depth: [1]}\n")
    with pytest.raises(BadInput) as e:
        load_variant_file(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
