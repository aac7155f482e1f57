"""Choose how a converted CvT computes its attention: transformers' einsum path or PyTorch's fused
``scaled_dot_product_attention`` (SDPA).

Why: transformers' ``CvtSelfAttention`` materialises the (B, heads, L, T) score matrix with two
einsums and a softmax. ``torch.nn.functional.scaled_dot_product_attention`` computes the same
thing in one fused kernel (flash / memory-efficient attention on GPUs), which is faster and
lighter at 384 px where stage 3 has 577 query tokens.

What must not change: CvT scales the scores by ``embed_dim ** -0.5``, the *full* embedding
width (the original's choice, kept by transformers as ``module.scale``), not SDPA's default
``head_dim ** -0.5``. The scale is therefore always passed explicitly. Everything around the
attention product (the depthwise-conv projections, the class token that skips them, the
``b h t d -> b t (h d)`` output layout) is reproduced line for line from transformers' forward.

How: the switch swaps the class of each ``CvtSelfAttention`` module for a subclass that only
overrides ``forward`` (no weights move, ``state_dict`` and ``save_pretrained`` are unchanged,
``isinstance`` still holds, and the model stays picklable and deep-copyable, which bound
methods stored on instances would not be). :func:`use_einsum` swaps the original class back.
The reference implementation (:class:`cvt_port.reference.OriginalCvT`) has no
``CvtSelfAttention`` modules, so these functions leave it untouched: it stays ground truth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.cvt.modeling_cvt import CvtSelfAttention

IMPLEMENTATIONS = ("einsum", "sdpa")


def sdpa_self_attention(
    module: CvtSelfAttention, hidden_state: torch.Tensor, height: int, width: int, scale: float | None = None
) -> torch.Tensor:
    """transformers' ``CvtSelfAttention.forward`` with the score/softmax/context step done by SDPA.

    ``scale`` defaults to ``module.scale`` (CvT's ``embed_dim ** -0.5``); it is a parameter only
    so tests can show that another scale (SDPA's per-head default) gives other logits.
    """
    scale = module.scale if scale is None else scale
    query, key, value = _project(module, hidden_state, height, width)
    dropout_p = module.dropout.p if module.training else 0.0
    context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scale)
    return _merge_heads(module, context)


def _project(module: CvtSelfAttention, hidden_state: torch.Tensor, height: int, width: int):
    """Query, key and value as (B, heads, tokens, head_dim), exactly as transformers builds them:
    the class token bypasses the convolutional projections and is prepended to each."""
    if module.with_cls_token:
        cls_token, hidden_state = torch.split(hidden_state, [1, height * width], 1)
    batch_size, _, num_channels = hidden_state.shape
    hidden_state = hidden_state.permute(0, 2, 1).view(batch_size, num_channels, height, width)

    key = module.convolution_projection_key(hidden_state)
    query = module.convolution_projection_query(hidden_state)
    value = module.convolution_projection_value(hidden_state)
    if module.with_cls_token:
        query = torch.cat((cls_token, query), dim=1)
        key = torch.cat((cls_token, key), dim=1)
        value = torch.cat((cls_token, value), dim=1)

    query = module.rearrange_for_multi_head_attention(module.projection_query(query))
    key = module.rearrange_for_multi_head_attention(module.projection_key(key))
    value = module.rearrange_for_multi_head_attention(module.projection_value(value))
    return query, key, value


def _merge_heads(module: CvtSelfAttention, context: torch.Tensor) -> torch.Tensor:
    """b h t d -> b t (h d), the layout transformers' forward returns."""
    batch_size, num_heads, tokens, head_dim = context.shape
    return context.permute(0, 2, 1, 3).contiguous().view(batch_size, tokens, num_heads * head_dim)


class CvtSelfAttentionSDPA(CvtSelfAttention):
    """``CvtSelfAttention`` whose forward runs through SDPA with CvT's own scale. Never
    constructed: :func:`use_sdpa` assigns it as the ``__class__`` of existing modules."""

    def forward(self, hidden_state, height, width):
        return sdpa_self_attention(self, hidden_state, height, width)


def _self_attentions(model: nn.Module) -> list[CvtSelfAttention]:
    return [m for m in model.modules() if isinstance(m, CvtSelfAttention)]


def use_sdpa(model: nn.Module) -> nn.Module:
    """Switch every ``CvtSelfAttention`` in ``model`` to SDPA (in place); returns ``model``.

    A model without such modules (the reference ``OriginalCvT``) is returned unchanged.
    """
    for m in _self_attentions(model):
        m.__class__ = CvtSelfAttentionSDPA
    return model


def use_einsum(model: nn.Module) -> nn.Module:
    """Restore transformers' own einsum forward in every ``CvtSelfAttention`` (in place)."""
    for m in _self_attentions(model):
        m.__class__ = CvtSelfAttention
    return model


def set_attention(model: nn.Module, impl: str) -> nn.Module:
    """``impl`` "einsum" (transformers' forward) or "sdpa" (fused); anything else is a ValueError."""
    if impl == "einsum":
        return use_einsum(model)
    if impl == "sdpa":
        return use_sdpa(model)
    raise ValueError(f"unknown attention implementation {impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")


def attention_implementations(model: nn.Module) -> set[str]:
    """The implementations in use in ``model`` ({"einsum"}, {"sdpa"}, both if mixed, empty if none)."""
    return {"sdpa" if isinstance(m, CvtSelfAttentionSDPA) else "einsum" for m in _self_attentions(model)}
