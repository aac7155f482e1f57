"""What can be evaluated, each turned into a module that maps normalised pixels to logits.

- a folder converted by cvt_port, through ``cvt_port.load_model`` (exact activation);
- the same folder through the stock ``CvtForImageClassification`` (``stock``: exact GELU);
- an original release ``.pth`` through our reference implementation (``reference``);
- any other Hugging Face image-classification folder or Hub id (``AutoModelForImageClassification``).

A folder must load cleanly, or the run stops before the first batch with one line (exit 2): a config.json
that is not JSON, weights that cannot be read (a truncated model.safetensors), weights of other shapes
than config.json describes, or missing weights. transformers would print a 30-100 line load report and
then raise (shapes) or carry on with randomly initialised weights (missing keys); its report is kept off
the screen and its findings are turned into that one line.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cvt_port.conversion import read_original, reference_model
from cvt_port.errors import BadInput, first_line
from cvt_port.variants import Variant, get_variant

from ..plan import ModelKind, PlanError

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
            raise PlanError("models.model", "is a file; give a Hugging Face model folder (convert .pth files with cvt_port)",
                            model)
        if not (path / "config.json").is_file():
            raise PlanError("models.model", "no config.json; give a Hugging Face model folder", model)
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise PlanError("models.model", "the folder has no weights (model.safetensors); convert or download it again",
                            model)
        return LoadedFolder(str(path), _read_config(path / "config.json", model), True)
    if model.count("/") != 1 or model.startswith((".", "/")):
        raise PlanError("models.model", "no such folder (and not a Hub id of the form org/name)", model)
    try:
        from transformers import AutoConfig

        return LoadedFolder(model, AutoConfig.from_pretrained(model).to_dict(), False)
    except Exception as exc:  # offline, unknown repo, no access
        raise PlanError("models.model", f"cannot read it from the Hub ({first_line(exc, 200)})", model) from None


def _read_config(path: Path, model: str) -> dict:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PlanError("models.model", f"config.json is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                        f"{exc.colno}); convert or download the model again", model) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError("models.model", f"config.json cannot be read ({first_line(exc, 200)})", model) from None
    if not isinstance(config, dict):
        raise PlanError("models.model", f"config.json holds a {type(config).__name__}, not a model config; "
                        "convert or download the model again", model)
    return config


def load_hf(folder: LoadedFolder, kind: ModelKind, trust_remote_code: bool = False) -> nn.Module:
    """kind "exact": the activation the folder records (cvt_port's own CvtPortForImageClassification, what
    cvt_port.load_model gives; the folder's copy of it is never run); "stock": stock CvtForImageClassification
    (exact GELU); "auto": AutoModelForImageClassification, running the folder's own code (auto_map) only with
    ``trust_remote_code``. Loaded cleanly or BadInput (see the module docstring)."""
    from transformers import AutoModelForImageClassification, CvtForImageClassification

    from cvt_port.hf import CvtPortForImageClassification

    if kind == "stock" and not folder.is_cvt:
        raise PlanError("models.stock", f"{folder.source} is a '{folder.config.get('model_type')}' model, not CvT")
    cls = {"exact": CvtPortForImageClassification, "stock": CvtForImageClassification}.get(
        kind, AutoModelForImageClassification)
    extra = {} if kind in ("exact", "stock") else {"trust_remote_code": bool(trust_remote_code)}
    model = _load_cleanly(cls, folder, strict=kind in ("exact", "stock"), **extra)
    return Logits(model.eval())


@contextlib.contextmanager
def _quiet_loading():
    """transformers' progress bar, load report (a logger warning) and Python warnings off the screen."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_cleanly(cls, folder: LoadedFolder, strict: bool, **from_pretrained_kwargs) -> nn.Module:
    """``cls.from_pretrained`` that accepts only a complete load: every weight read, of the shape the config
    describes (mismatches are collected, not raised mid-report, so the line can name the first one), none
    missing; for CvT (``strict``) nothing unexpected either. Any other failure to load is one line too."""
    source = folder.source
    weights = "weights"
    if folder.is_local:
        weights = next((f for f in WEIGHT_FILES if (Path(source) / f).is_file()), weights)
    with _quiet_loading():
        try:
            model, info = cls.from_pretrained(source, output_loading_info=True, ignore_mismatched_sizes=True,
                                              **from_pretrained_kwargs)
        except Exception as exc:  # SafetensorError (truncated), OSError, ValueError, RuntimeError...
            if from_pretrained_kwargs.get("trust_remote_code") is False and "auto_map" in folder.config:
                raise PlanError("models.model", f"cannot load it without running its own code (auto_map; "
                                f"{first_line(exc, 160, typed=True)}); use models.trust_remote_code if you trust it",
                                source) from None
            raise PlanError("models.model", f"cannot load {weights} ({first_line(exc, 200, typed=True)}); "
                            "convert or download the model again", source) from None

    def more(items) -> str:
        return f" (and {len(items) - 1} more)" if len(items) > 1 else ""

    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: m[0])
    if mismatched:
        key, in_file, expected = mismatched[0]
        raise PlanError("models.model", f"{weights} does not fit config.json: '{key}' is {list(in_file)} in the "
                        f"weights, {list(expected)} by the config{more(mismatched)}; "
                        "convert or download the model again", source)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise PlanError("models.model", f"{weights} lacks '{missing[0]}'{more(missing)}: those weights would be "
                        "random; convert or download the model again", source)
    unexpected = sorted(info.get("unexpected_keys") or []) if strict else []
    if unexpected:
        raise PlanError("models.model", f"{weights} holds '{unexpected[0]}'{more(unexpected)}, which a CvT of this "
                        "config.json does not have; convert or download the model again", source)
    return model


def load_reference(pth: str, variant: Variant | None) -> tuple[nn.Module, Variant]:
    """An original release file in our reference implementation (strict: every key, every shape); a file
    that cannot be read or does not fit is one line (BadInput) before any batch."""
    sd, chosen = read_original(Path(pth), variant)
    return reference_model(sd, chosen), chosen


def resolve_variant(config: str | None, folder: LoadedFolder | None) -> Variant | None:
    """The plan's ``config`` wins; else the variant cvt_port recorded when it converted the folder."""
    if config:
        return get_variant(config)
    facts = folder.conversion_facts() if folder else None
    if facts and facts.get("variant"):
        try:
            return get_variant(facts["variant"])
        except BadInput:
            return None
    return None
