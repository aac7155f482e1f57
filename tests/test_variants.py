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


# --------------------------------------------------------------------------- typed, range-checked configs

GOOD = get_variant("cvt-13-224").path.read_text()

# (what the line says in the good file, what a user wrote instead, the key the error must name, what it must allow)
BAD_VALUES = [
    ("top1_tolerance: 0.1", "top1_tolerance: lots", "gate.top1_tolerance", "'lots': must be a number"),
    ("top1_tolerance: 0.1", "top1_tolerance: -0.5", "gate.top1_tolerance", "from 0 to 1 "),
    ("min_agreement: 0.999", "min_agreement: 99.9", "gate.min_agreement", "a fraction from 0.99 to 1"),
    ("min_agreement: 0.999", "min_agreement: 0.999, detectable_drop: 0", "gate.detectable_drop", "> 0"),
    ("min_agreement: 0.999", "min_agreement: 0.999, detectable_drop: '1'", "gate.detectable_drop", "'1'"),
    ("min_agreement: 0.999", "min_agreement: 0.999, power: 1", "gate.power", "from 0.9 to 1, exclusive"),
    ("min_agreement: 0.999", "min_agreement: 0.999, alpha: 0", "gate.alpha", "a probability > 0 and <= 0.05"),
    ("min_agreement: 0.999", "min_agreement: 0.999, powr: 0.9", "gate.powr", "allowed in 'gate'"),
    ("crop_pct: 0.875", 'crop_pct: "0.875"', "preprocessing.crop_pct", "'0.875': must be a number in (0, 1]"),
    ("crop_pct: 0.875", "crop_pct: 1.5", "preprocessing.crop_pct", "(0, 1]"),
    ("crop_pct: 0.875", "crop_pct: .nan", "preprocessing.crop_pct", "(0, 1]"),
    ("interpolation: bicubic", "interpolation: bicubik", "preprocessing.interpolation",
     "one of nearest, lanczos, bilinear, bicubic"),
    ("resize: shorter_side_then_center_crop", "resize: crop", "preprocessing.resize",
     "one of shorter_side_then_center_crop, warp"),
    ("img_size: 224", "img_size: 224.0", "preprocessing.img_size", "an integer >= 1"),
    ("img_size: 224", "img_size: true", "preprocessing.img_size", "an integer >= 1"),
    ("std: [0.229, 0.224, 0.225]", "std: [0.229, 0.224]", "preprocessing.std", "a list of 3 numbers > 0"),
    ("std: [0.229, 0.224, 0.225]", "std: [0.229, 0, 0.225]", "preprocessing.std", "> 0"),
    ("mean: [0.485, 0.456, 0.406]", "mean: 0.45", "preprocessing.mean", "a list of 3 numbers"),
    ("mean: [0.485, 0.456, 0.406]", "", "preprocessing.mean", "is missing"),
    ("mean: [0.485, 0.456, 0.406]", "mean: [0.485, .inf, 0.406]", "preprocessing.mean", "a list of 3 numbers"),
    ("num_heads: [1, 3, 6]", "num_heads: [1, 3]", "architecture.num_heads", "3 of them, one per stage"),
    ("embed_dim: [64, 192, 384]", "embed_dim: [64, 192, 385]", "architecture.embed_dim",
     "divisible by num_heads [1, 3, 6]"),
    ("patch_sizes: [7, 3, 3]", "patch_sizes: [7, 3]", "architecture.patch_sizes", "3 of them"),
    ("patch_padding: [2, 1, 1]", "patch_padding: [2, -1, 1]", "architecture.patch_padding", "integers >= 0"),
    ("cls_token: [false, false, true]", "cls_token: [0, 0, 1]", "architecture.cls_token", "3 booleans"),
    ("depth: [1, 2, 10]", "depth: [1, 2, 0]", "architecture.depth", "integers >= 1"),
    ("mlp_ratio: 4.0", "mlp_ratio: four", "architecture.mlp_ratio", "a number > 0"),
    ("num_classes: 1000", "num_classes: 10", "labels", "'imagenet-1k' names 1000 classes"),
    ("activation: quick_gelu", "activation: gelu", "architecture.activation", "one of quick_gelu"),
    ("in_chans: 3", "inchans: 3", "architecture.inchans", "allowed in 'architecture'"),
    ("top1: 81.6", "top1: 181.6", "reference.top1", "0 to 100"),
    ("num_samples: 50000", "num_samples: 5e4", "reference.num_samples", "an integer >= 1"),
    ("hub_id: microsoft/cvt-13", "hub_id: [microsoft/cvt-13]", "hub_id", "a non-empty string or null"),
    ("labels: imagenet-1k", "labels: [cat, dog]", "labels", "a list of 1000 distinct class names"),
]


@pytest.mark.parametrize("good,bad,key,allowed", BAD_VALUES, ids=[b[1] or f"no {b[2]}" for b in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_file_key_value_and_what_is_allowed(tmp_path, good, bad, key, allowed):
    assert good in GOOD
    path = tmp_path / "cvt-13-224.yaml"
    path.write_text(GOOD.replace(good, bad, 1))
    with pytest.raises(BadInput) as e:
        load_variant_file(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    assert f"'{key}'" in msg and allowed in msg, msg


def test_a_file_that_is_not_yaml_or_not_a_mapping(tmp_path):
    for text, expected in [("name: [x\n", "not valid YAML"), ("- a\n- b\n", "not a variant config"),
                           ("", "not a variant config"), ("name: x\nwhat: 1\n", "unknown key 'what'")]:
        path = tmp_path / "x.yaml"
        path.write_text(text)
        with pytest.raises(BadInput, match=expected):
            load_variant_file(path)


def test_gate_defaults_live_in_the_gate_and_the_files_keys_are_read(tmp_path):
    """The defaults are the gate's (evaluate.verdict.gate_settings), not the variant loader's; a file's keys override them,
    and every key a file may write is a setting of the gate (and the other way round)."""
    from cvt_port import variants
    from evaluate.verdict.gate_settings import DEFAULTS, SETTING_NAMES, gate_settings

    assert not [name for name in dir(variants) if name.startswith("DEFAULT_")]
    assert set(variants.GATE_KEYS) == set(SETTING_NAMES)
    no_gate = tmp_path / "no-gate.yaml"
    no_gate.write_text(GOOD.split("\ngate:")[0] + "\n")
    assert gate_settings(load_variant_file(no_gate)) == DEFAULTS == gate_settings(None)
    assert (DEFAULTS.top1_tolerance, DEFAULTS.min_agreement, DEFAULTS.detectable_drop, DEFAULTS.baseline_top1_tolerance,
            DEFAULTS.baseline_max_flipped, DEFAULTS.power, DEFAULTS.alpha) == (0.1, 0.999, 1.0, 0.1, 0.001, 0.99, 0.01)
    stated = tmp_path / "stated.yaml"
    stated.write_text(GOOD.replace("min_agreement: 0.999}", "min_agreement: 0.99, detectable_drop: 2.5, power: 0.9}"))
    g = gate_settings(load_variant_file(stated))
    assert (g.min_agreement, g.detectable_drop, g.power, g.top1_tolerance) == (0.99, 2.5, 0.9, 0.1)


def test_interpolation_names_are_pil_resample_codes_and_used_by_both_preprocessings():
    from PIL import Image

    from cvt_port.hf import make_image_processor
    from cvt_port.variants import INTERPOLATIONS
    from evaluate.pixels.preprocess import RESAMPLE

    assert INTERPOLATIONS == {name: int(Image.Resampling[name.upper()]) for name in INTERPOLATIONS}
    assert RESAMPLE == {name: Image.Resampling(code) for name, code in INTERPOLATIONS.items()}
    v = get_variant("cvt-13-224")
    assert make_image_processor(v).resample == INTERPOLATIONS["bicubic"] == Image.Resampling.BICUBIC
