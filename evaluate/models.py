"""What can be evaluated, each turned into a module that maps normalised pixels to logits.

- a folder converted by cvt_port, through ``cvt_port.load_model`` (exact activation);
- the same folder through the stock ``CvtForImageClassification`` (``--stock``: exact GELU);
- an original release ``.pth`` through our reference implementation (``--reference``);
- any other Hugging Face image-classification folder or Hub id (``AutoModelForImageClassification``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cvt_port.conversion import read_original, reference_model
from cvt_port.errors import BadInput
from cvt_port.variants import Variant, get_variant

from .plan import ModelKind

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class Logits(nn.Module):
    """Adapter: a Hugging Face classifier called on pixel_values, returning the logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


@dataclass
class Candidate:
    """One model of the side-by-side evaluation, with the preprocessing mode it reads."""

    name: str  # row name in the report: "original", "converted", "stock", "converted (hf)"
    kind: ModelKind
    module: nn.Module
    preprocessing: str  # "release" | "hf"


@dataclass
class LoadedFolder:
    """A Hugging Face model folder (or Hub id) and what it says about itself."""

    source: str
    config: dict
    is_local: bool

    @property
    def is_cvt(self) -> bool:
        return self.config.get("model_type") == "cvt"

    @property
    def label2id(self) -> dict[str, int] | None:
        l2i = self.config.get("label2id")
        return {str(k): int(v) for k, v in l2i.items()} if l2i else None

    def conversion_facts(self) -> dict | None:
        p = Path(self.source) / "conversion.json"
        return json.loads(p.read_text()) if self.is_local and p.is_file() else None


def inspect_folder(model: str) -> LoadedFolder:
    """Read a model folder's config without loading weights; Hub ids are read through the Hub cache."""
    path = Path(model)
    if path.exists():
        if not path.is_dir():
            raise BadInput(f"--model {model}: is a file; give a Hugging Face model folder (convert .pth files with cvt_port)")
        if not (path / "config.json").is_file():
            raise BadInput(f"--model {model}: no config.json; give a Hugging Face model folder")
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise BadInput(f"--model {model}: the folder has no weights (model.safetensors); convert or download it again")
        return LoadedFolder(str(path), json.loads((path / "config.json").read_text()), True)
    if model.count("/") != 1 or model.startswith((".", "/")):
        raise BadInput(f"--model {model}: no such folder (and not a Hub id of the form org/name)")
    try:
        from transformers import AutoConfig

        return LoadedFolder(model, AutoConfig.from_pretrained(model).to_dict(), False)
    except Exception as exc:  # offline, unknown repo, no access
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadInput(f"--model {model}: cannot read it from the Hub ({first})") from None


def load_hf(folder: LoadedFolder, kind: ModelKind) -> nn.Module:
    """kind "exact": cvt_port.load_model; "stock": stock CvtForImageClassification; "auto": AutoModel."""
    if kind == "exact":
        from cvt_port import load_model

        model = load_model(folder.source)
    elif kind == "stock":
        from transformers import CvtForImageClassification

        if not folder.is_cvt:
            raise BadInput(f"--stock: {folder.source} is a '{folder.config.get('model_type')}' model, not CvT")
        model = CvtForImageClassification.from_pretrained(folder.source)
    else:
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(folder.source)
    return Logits(model.eval())


def load_reference(pth: str, variant: Variant | None) -> tuple[nn.Module, Variant]:
    """An original release file in our reference implementation (strict: every key, every shape)."""
    sd, chosen = read_original(Path(pth), variant)
    return reference_model(sd, chosen), chosen


def resolve_variant(config: str | None, folder: LoadedFolder | None) -> Variant | None:
    """--config wins; else the variant cvt_port recorded when it converted the folder."""
    if config:
        return get_variant(config)
    facts = folder.conversion_facts() if folder else None
    if facts and facts.get("variant"):
        try:
            return get_variant(facts["variant"])
        except BadInput:
            return None
    return None
