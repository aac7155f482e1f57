"""The Hugging Face side: config, image processor, and ``load_model`` with the exact activation.

Stock ``CvtForImageClassification`` hard-codes exact (erf) GELU; the released weights were
trained with QuickGELU (spec section 2). We record ``hidden_act: quick_gelu`` in the saved
config (an extra field the stock class keeps but ignores) and ``load_model`` loads the folder into
:class:`~cvt_port.remote.modeling_cvt_port.CvtPortForImageClassification`, which puts transformers'
own ``QuickGELUActivation`` in place, so the loaded model computes what the original computed while
the stock class can still load the very same folder. That class and the release image processor
live in :mod:`cvt_port.remote`, whose files every converted folder also carries (``auto_map``), so
``trust_remote_code=True`` users run this very code.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import CvtConfig, CvtForImageClassification
from transformers.models.cvt.modeling_cvt import CvtIntermediate

from .remote import MODEL_AUTO_MAP, PROCESSOR_AUTO_MAP
from .remote.image_processing_cvt_port import CvtPortImageProcessor
from .remote.modeling_cvt_port import CvtPortForImageClassification, apply_config_activation, set_activation
from .variants import INTERPOLATIONS, Variant

__all__ = [
    "CvtPortForImageClassification", "CvtPortImageProcessor", "apply_config_activation", "set_activation",
    "hf_config", "build_hf_model", "load_model", "make_image_processor", "make_release_processor",
    "MODEL_AUTO_MAP", "PROCESSOR_AUTO_MAP",
]


def hf_config(variant: Variant) -> CvtConfig:
    a = variant.architecture
    names = variant.class_names()
    if len(names) != a.num_classes:
        raise ValueError(f"{variant.path}: {len(names)} labels for {a.num_classes} classes")
    n = a.num_stages
    return CvtConfig(
        num_channels=a.in_chans,
        patch_sizes=list(a.patch_sizes),
        patch_stride=list(a.patch_stride),
        patch_padding=list(a.patch_padding),
        embed_dim=list(a.embed_dim),
        num_heads=list(a.num_heads),
        depth=list(a.depth),
        mlp_ratio=[float(a.mlp_ratio)] * n,
        attention_drop_rate=[0.0] * n,
        drop_rate=[0.0] * n,
        drop_path_rate=[0.0] * n,
        qkv_bias=[True] * n,
        cls_token=list(a.cls_token),
        qkv_projection_method=["dw_bn"] * n,
        kernel_qkv=[3] * n,
        padding_kv=[1] * n,
        stride_kv=[2] * n,
        padding_q=[1] * n,
        stride_q=[1] * n,
        num_labels=a.num_classes,
        id2label={i: name for i, name in enumerate(names)},
        label2id={name: i for i, name in enumerate(names)},
        hidden_act=a.activation,
        architectures=["CvtForImageClassification"],
        auto_map=dict(MODEL_AUTO_MAP),
    )


def build_hf_model(config: CvtConfig, device: str | torch.device = "cpu") -> CvtForImageClassification:
    """A fresh model of ``config`` computing the activation the config names."""
    with torch.device(device):
        model = CvtPortForImageClassification(config)
    return model.eval()


def load_model(path: str | Path, **from_pretrained_kwargs) -> CvtForImageClassification:
    """A converted folder (or Hub id) as a ``CvtForImageClassification`` in eval mode that
    computes exactly what the original computed (the activation recorded in its config)."""
    model = CvtPortForImageClassification.from_pretrained(str(path), **from_pretrained_kwargs)
    return model.eval()


@contextmanager
def quiet_transformers():
    """Hide transformers' notice that it falls back to the PIL image processors without torchvision:
    PIL is what the release used, so the fallback is what we want."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def make_image_processor(variant: Variant):
    """The variant's evaluation preprocessing as a Hugging Face image processor, built locally.

    224 models: ConvNext's processor (shortest edge size/crop_pct, centre crop), as on the Hub.
    Warp models: ConvNext's processor warps at size >= 384 (the release rule); smaller warp
    sizes (the bundled tiny model) use ViT's processor, which always warps.
    """
    p = variant.preprocessing
    common = dict(resample=INTERPOLATIONS[p.interpolation], image_mean=list(p.mean), image_std=list(p.std))
    if p.resize == "shorter_side_then_center_crop" and p.img_size >= 384:
        raise ValueError(f"{variant.path}: ConvNext's processor cannot crop at size {p.img_size} >= 384")
    with quiet_transformers():
        from transformers import ConvNextImageProcessor, ViTImageProcessor

        if p.resize == "warp" and p.img_size < 384:
            return ViTImageProcessor(size={"height": p.img_size, "width": p.img_size}, **common)
        return ConvNextImageProcessor(size={"shortest_edge": p.img_size}, crop_pct=p.crop_pct, **common)


def make_release_processor(variant: Variant) -> CvtPortImageProcessor:
    """The release protocol as an image processor, from the very settings the stock processor of
    :func:`make_image_processor` writes (so one preprocessor_config.json serves both)."""
    stock = make_image_processor(variant).to_dict()
    keys = ("do_resize", "size", "crop_pct", "resample", "do_rescale", "rescale_factor", "do_normalize",
            "image_mean", "image_std")
    return CvtPortImageProcessor(**{k: stock[k] for k in keys if stock.get(k) is not None})


def gelu_module_names(model: nn.Module) -> set[str]:
    """Class names of the MLP activations in ``model`` (for tests and model cards)."""
    return {type(m.activation).__name__ for m in model.modules() if isinstance(m, CvtIntermediate)}
