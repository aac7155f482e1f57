"""SDPA attention (cvt_port.attention) computes what transformers' einsum path computes, with CvT's
full-width scale, and can be switched back bit for bit; the reference model is never touched."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from transformers.models.cvt.modeling_cvt import CvtSelfAttention

from cvt_port.attention import (
    CvtSelfAttentionSDPA,
    attention_implementations,
    sdpa_self_attention,
    set_attention,
    use_einsum,
    use_sdpa,
)
from cvt_port.conversion import build_pair
from cvt_port.hf import build_hf_model, hf_config
from cvt_port.reference import OriginalCvT, randomize_
from cvt_port.variants import get_variant

# (variant, input size): CvT-13 at its own size; the W24 layout (heads 3/12/16, head widths 64)
# at 64 px so its 20-block stage 3 stays quick on a CPU.
CASES = [("cvt-13-224", 224), ("cvt-w24-384-22k", 64)]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def model_and_input(request):
    """(converted HF model, input, its einsum logits, the reference OriginalCvT with the same weights)."""
    name, size = request.param
    variant = get_variant(name)
    reference = randomize_(OriginalCvT(variant.architecture), seed=3).eval()
    _, model = build_pair(reference.state_dict(), variant)  # the HF model, keyed as convert() keys it
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        einsum = model(x).logits
    yield model, x, einsum, reference
    use_einsum(model)


def logits(model, x):
    with torch.no_grad():
        return model(x).logits


class WrongScale(CvtSelfAttention):
    """SDPA's default per-head scale (head_dim ** -0.5): what a careless port would compute."""

    def forward(self, hidden_state, height, width):
        head_dim = self.embed_dim // self.num_heads
        return sdpa_self_attention(self, hidden_state, height, width, scale=head_dim**-0.5)


def test_sdpa_matches_einsum(model_and_input):
    model, x, einsum, _ = model_and_input
    set_attention(model, "sdpa")
    assert attention_implementations(model) == {"sdpa"}
    diff = (logits(model, x) - einsum).abs().max().item()
    print(f"max |sdpa - einsum| = {diff:.3g}")
    assert diff <= 1e-5


def test_use_einsum_restores_bit_identical_output(model_and_input):
    model, x, einsum, _ = model_and_input
    use_sdpa(model)
    use_einsum(model)
    assert attention_implementations(model) == {"einsum"}
    assert all(type(m) is CvtSelfAttention for m in model.modules() if isinstance(m, CvtSelfAttention))
    assert torch.equal(logits(model, x), einsum)


def test_the_per_head_scale_would_be_caught(model_and_input):
    """The tolerance above is meaningful: SDPA with its default (per-head) scale is far off."""
    model, x, einsum, _ = model_and_input
    modules = [m for m in model.modules() if isinstance(m, CvtSelfAttention)]
    assert all(m.scale == m.embed_dim**-0.5 for m in modules)
    try:
        for m in modules:
            m.__class__ = WrongScale
        diff = (logits(model, x) - einsum).abs().max().item()
    finally:
        use_einsum(model)
    assert diff > 1e-3


def test_bf16_autocast_smoke(model_and_input):
    model, x, _, _ = model_and_input
    use_sdpa(model)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x[:1]).logits
    finally:
        use_einsum(model)
    assert out.shape == (1, 1000) and torch.isfinite(out.float()).all()


def test_switched_model_pickles_and_copies():
    model = use_sdpa(build_hf_model(hf_config(get_variant("cvt-tiny-digits"))))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert attention_implementations(clone) == {"sdpa"}
        assert all(isinstance(m, CvtSelfAttentionSDPA) for m in clone.modules() if isinstance(m, CvtSelfAttention))
    assert model.state_dict().keys() == use_einsum(copy.deepcopy(model)).state_dict().keys()


def test_unknown_implementation_is_rejected():
    model = build_hf_model(hf_config(get_variant("cvt-tiny-digits")))
    with pytest.raises(ValueError, match="flash"):
        set_attention(model, "flash")
    assert attention_implementations(model) == {"einsum"}


def test_sdpa_matches_the_untouched_reference(model_and_input):
    """Against the ground truth itself; switching the reference is a no-op (it has no CvtSelfAttention)."""
    model, x, _, reference = model_and_input
    before = {n: type(m) for n, m in reference.named_modules()}
    with torch.no_grad():
        expected = reference(x)
        set_attention(reference, "sdpa")
        assert {n: type(m) for n, m in reference.named_modules()} == before
        assert attention_implementations(reference) == set()
        assert torch.equal(reference(x), expected)
        diff = (set_attention(model, "sdpa")(x).logits - expected).abs().max().item()
    use_einsum(model)
    assert diff <= 1e-5
