"""Our own implementation of the original CvT, written from the spec (sections 1-2).

Its ``state_dict()`` keys and shapes are exactly those of the release files
(``stage{i}.blocks.{j}.attn.conv_proj_q.conv.weight`` ...), so a release file loads into it
with ``strict=True``. It computes what the original computed: QuickGELU, attention scale
``dim_out ** -0.5`` (the full width, not the per-head width), LayerNorm in float32 even under
half precision, BatchNorm from running statistics. The original's bare ``squeeze()`` of the
class token (1-D logits for a batch of one) is absorbed: logits are always (batch, classes).

This model is the *ground truth* every conversion is checked against, so it deliberately
shares no code with the Hugging Face model.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .variants import Architecture


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation the released models were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (eps 1e-5), as the original."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def _tokens(x: torch.Tensor) -> torch.Tensor:  # b c h w -> b (h w) c
    return x.flatten(2).transpose(1, 2)


def _map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:  # b (h w) c -> b c h w
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class ConvEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=stride, padding=padding)
        self.norm = LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        _, _, h, w = x.shape
        return _map(self.norm(_tokens(x)), h, w)


def _dw_bn(dim: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(dim, dim, kernel_size=3, padding=1, stride=stride, bias=False, groups=dim),
            bn=nn.BatchNorm2d(dim, eps=1e-5),
        )
    )


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, with_cls_token: bool):
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5  # full embedding width: the original's choice
        self.with_cls_token = with_cls_token
        self.conv_proj_q = _dw_bn(dim, stride=1)
        self.conv_proj_k = _dw_bn(dim, stride=2)
        self.conv_proj_v = _dw_bn(dim, stride=2)
        self.proj_q = nn.Linear(dim, dim, bias=True)
        self.proj_k = nn.Linear(dim, dim, bias=True)
        self.proj_v = nn.Linear(dim, dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # b t (h d) -> b h t d
        b, t, c = x.shape
        return x.reshape(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if self.with_cls_token:
            cls_token, x = torch.split(x, [1, h * w], 1)
        fmap = _map(x, h, w)
        q, k, v = (_tokens(conv(fmap)) for conv in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v))
        if self.with_cls_token:
            q, k, v = (torch.cat((cls_token, t), dim=1) for t in (q, k, v))
        q, k, v = self._heads(self.proj_q(q)), self._heads(self.proj_k(k)), self._heads(self.proj_v(v))
        attn = torch.softmax(torch.einsum("bhlk,bhtk->bhlt", q, k) * self.scale, dim=-1)
        out = torch.einsum("bhlt,bhtv->bhlv", attn, v)
        b, nh, t, d = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, nh * d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, with_cls_token: bool):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, num_heads, with_cls_token)
        self.norm2 = LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x))


class Stage(nn.Module):
    def __init__(self, arch: Architecture, i: int):
        super().__init__()
        in_chans = arch.in_chans if i == 0 else arch.embed_dim[i - 1]
        dim = arch.embed_dim[i]
        self.patch_embed = ConvEmbed(
            arch.patch_sizes[i], in_chans, dim, arch.patch_stride[i], arch.patch_padding[i]
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if arch.cls_token[i] else None
        self.blocks = nn.ModuleList(
            Block(dim, arch.num_heads[i], arch.mlp_ratio, arch.cls_token[i]) for _ in range(arch.depth[i])
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.patch_embed(x)
        b, _, h, w = x.shape
        x = _tokens(x)
        cls_token = None
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)
        for blk in self.blocks:
            x = blk(x, h, w)
        if self.cls_token is not None:
            cls_token, x = torch.split(x, [1, h * w], 1)
        return _map(x, h, w), cls_token


class OriginalCvT(nn.Module):
    """The original ConvolutionalVisionTransformer, keyed exactly like the release files."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        for i in range(arch.num_stages):
            setattr(self, f"stage{i}", Stage(arch, i))
        self.norm = LayerNorm(arch.embed_dim[-1], eps=1e-5)
        self.head = nn.Linear(arch.embed_dim[-1], arch.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        cls_token = None
        for i in range(self.arch.num_stages):
            x, cls_token = getattr(self, f"stage{i}")(x)
        if self.arch.cls_token[-1]:
            return self.norm(cls_token).squeeze(1)  # squeeze(1), not squeeze(): batch of one stays 2-D
        return self.norm(_tokens(x)).mean(dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(pixel_values))


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with non-trivial BatchNorm/LayerNorm statistics, for tests and proofs.

    Every parameter and buffer gets values a trained model could have, so a key mapped to the
    wrong place, a transposed weight or ignored running statistics changes the logits.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 * (2.0 if "cls_token" in name else 1.0))
        elif name.endswith("weight"):  # norm scales
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))
        elif name.endswith("num_batches_tracked"):
            b.fill_(int(torch.randint(1, 100000, (1,), generator=g)))
    return model
