"""The key table is a bijection for every variant, checked on the meta device (no checkpoint)."""

import re
from collections import Counter

import pytest
import torch

from cvt_port.hf import build_hf_model, hf_config
from cvt_port.keymap import ORIGINAL_TO_CONVERTED_KEY_MAPPING, convert_key, convert_keys
from cvt_port.reference import OriginalCvT
from cvt_port.variants import all_variants

VARIANTS = sorted(all_variants())


@pytest.mark.parametrize("name", VARIANTS)
def test_mapping_is_a_bijection_onto_the_hf_model(name):
    v = all_variants()[name]
    with torch.device("meta"):
        original = OriginalCvT(v.architecture).state_dict()
    hf = build_hf_model(hf_config(v), device="meta").state_dict()
    mapped, unmapped = convert_keys(original)
    assert unmapped == []  # every original key has a rule
    targets = list(mapped.values())
    assert len(set(targets)) == len(targets)  # injective: no two keys land on one
    assert set(targets) == set(hf)  # onto: every HF key is filled
    for k, t in mapped.items():
        assert tuple(original[k].shape) == tuple(hf[t].shape), (k, t)


def test_each_original_key_matches_exactly_one_rule():
    v = all_variants()["cvt-w24-384-22k"]
    with torch.device("meta"):
        keys = list(OriginalCvT(v.architecture).state_dict())
    for k in keys:
        hits = [p for p, _ in ORIGINAL_TO_CONVERTED_KEY_MAPPING if re.match(p, k)]
        assert len(hits) == 1, (k, hits)
    used = Counter(p for k in keys for p, _ in ORIGINAL_TO_CONVERTED_KEY_MAPPING if re.match(p, k))
    assert set(used) == {p for p, _ in ORIGINAL_TO_CONVERTED_KEY_MAPPING}  # no dead rule


def test_spec_section_3_examples():
    assert convert_key("stage2.cls_token") == "cvt.encoder.stages.2.cls_token"
    assert convert_key("stage1.cls_token") == "cvt.encoder.stages.1.cls_token"  # not hard-wired to stage 2
    assert convert_key("stage2.blocks.9.attn.conv_proj_k.bn.num_batches_tracked") == (
        "cvt.encoder.stages.2.layers.9.attention.attention.convolution_projection_key."
        "convolution_projection.normalization.num_batches_tracked"
    )
    assert convert_key("stage0.blocks.0.attn.proj_v.bias") == "cvt.encoder.stages.0.layers.0.attention.attention.projection_value.bias"
    assert convert_key("stage1.blocks.3.attn.proj.weight") == "cvt.encoder.stages.1.layers.3.attention.output.dense.weight"
    assert convert_key("stage0.patch_embed.norm.bias") == "cvt.encoder.stages.0.embedding.convolution_embeddings.normalization.bias"
    assert convert_key("norm.weight") == "layernorm.weight" and convert_key("head.bias") == "classifier.bias"
    assert convert_key("stage0.blocks.0.mlp.fc3.weight") is None
    assert convert_key("module.head.bias") is None
