"""The reference implementation computes what the original computed (spec section 2)."""

import torch

from cvt_port.reference import LayerNorm, OriginalCvT, QuickGELU, randomize_
from cvt_port.variants import get_variant


def small_model():
    return randomize_(OriginalCvT(get_variant("cvt-13-224").architecture)).eval()


def test_quick_gelu_is_x_sigmoid_1702x():
    x = torch.linspace(-6, 6, 101)
    assert torch.equal(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    assert (QuickGELU()(x) - torch.nn.functional.gelu(x)).abs().max() > 0.01  # not the exact GELU


def test_attention_scale_is_full_width():
    m = small_model()
    attn = m.stage2.blocks[0].attn
    assert attn.num_heads == 6 and attn.scale == 384**-0.5  # not (384 / 6) ** -0.5


def test_batch_of_one_gives_2d_logits_equal_to_the_batched_row():
    m = small_model()
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(x)
        one = m(x[1:2])
    assert one.shape == (1, 1000)
    assert torch.allclose(one[0], full[1], atol=1e-5)


def test_layernorm_runs_in_float32_under_half_precision():
    ln = LayerNorm(8, eps=1e-5)
    x = (torch.randn(4, 8) * 1000).to(torch.bfloat16)
    out = ln(x)
    assert out.dtype == torch.bfloat16
    exact = torch.nn.functional.layer_norm(x.float(), (8,), eps=1e-5).to(torch.bfloat16)
    assert torch.equal(out, exact)


def test_batchnorm_running_statistics_are_used():
    m = small_model()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = m(x)
        m.stage1.blocks[0].attn.conv_proj_v.bn.running_mean.add_(1.0)
        after = m(x)
    assert (before - after).abs().max() > 1e-3
