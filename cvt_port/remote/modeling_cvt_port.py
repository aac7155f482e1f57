"""CvT for image classification with the activation its config names (``hidden_act``).

Transformers' ``CvtForImageClassification`` hard-codes the exact (erf) GELU in every MLP, while the
original CvT release was trained with QuickGELU (``x * sigmoid(1.702 x)``). This class is that model
with the MLP activation taken from ``config.hidden_act`` ("quick_gelu" for the release models; exact
GELU when the config names none), so it computes what the original computed.

This file is copied into every folder written by cvt-port (``auto_map`` in config.json), where
``AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)`` loads it; cvt-port's
own ``cvt_port.load_model`` uses this very module. Self-contained: it imports only transformers and torch.
"""

from torch import nn
from transformers import CvtForImageClassification
from transformers.activations import ACT2FN
from transformers.models.cvt.modeling_cvt import CvtIntermediate

DEFAULT_ACTIVATION = "gelu"  # what the stock class computes; used when the config names no activation


def set_activation(model: nn.Module, name: str) -> nn.Module:
    """Put activation ``name`` (a key of transformers' ACT2FN, e.g. "quick_gelu" or "gelu") in every
    CvT MLP of ``model``, in place."""
    act = ACT2FN[name]
    for module in model.modules():
        if isinstance(module, CvtIntermediate):
            module.activation = act
    return model


def config_activation(config) -> str:
    """The activation ``config`` records (``hidden_act``), or the stock class's exact GELU."""
    return getattr(config, "hidden_act", None) or DEFAULT_ACTIVATION


def apply_config_activation(model: nn.Module) -> nn.Module:
    """The activation the model's config records, in place."""
    return set_activation(model, config_activation(model.config))


class CvtPortForImageClassification(CvtForImageClassification):
    """``CvtForImageClassification`` with the activation ``config.hidden_act`` names (same weights,
    same keys: a folder loads into this class and into the stock one alike)."""

    def __init__(self, config):
        super().__init__(config)
        apply_config_activation(self)
