"""The models of one side-by-side pass, built from the plan's :class:`~evaluate.plan.ModelSpec`.

The primary model comes first (the converted folder through ``cvt_port.load_model``, the stock class
with ``stock``, or any Hugging Face classifier); the original ``.pth`` joins as the reference; the
primary runs once more under the folder's own image processor with ``preprocessing both``; the
stock class joins as an extra row with ``with_stock``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cvt_port.variants import Variant

from .folders import Candidate, LoadedFolder, load_hf, load_reference
from ..plan import Attention, Mode, ModelKind, ModelSpec

ORIGINAL = "original"  # the reference row's name in every report


@dataclass
class Candidates:
    """The candidate models (primary first), which is the primary and which the reference, and the
    variant (read off the original weights when no config named it)."""

    models: list[Candidate]
    primary: str
    reference: str | None
    variant: Variant | None


def build_candidates(spec: ModelSpec, modes: tuple[Mode, ...], folder: LoadedFolder,
                     variant: Variant | None) -> Candidates:
    base_mode = modes[0].value
    models: list[Candidate] = []
    reference = None
    if spec.reference is not None:
        module, variant = load_reference(str(spec.reference), variant)
        reference = ORIGINAL
        models.append(Candidate(reference, ModelKind.REFERENCE, module, base_mode))
    if spec.stock:
        kind, primary = ModelKind.STOCK, "stock"
    elif folder.is_cvt:
        kind, primary = ModelKind.EXACT, "converted"
    else:
        kind, primary = ModelKind.AUTO, "model"
    primary_module = load_hf(folder, kind, trust_remote_code=spec.trust_remote_code)
    models.insert(0, Candidate(primary, kind, primary_module, base_mode))
    if Mode.HF in modes[1:]:
        models.append(Candidate(f"{primary} (hf)", kind, primary_module, Mode.HF.value))
    if spec.with_stock and kind is not ModelKind.STOCK:
        models.append(Candidate("stock", ModelKind.STOCK, load_hf(folder, ModelKind.STOCK), base_mode))
    return Candidates(models, primary, reference, variant)


def tune_models(candidates: Candidates, attention: Attention, compile: bool) -> None:
    """The attention choice, applied to the Hugging Face models only (the reference is the ground truth: its own
    einsum attention, as released), and torch.compile, applied to every model alike, the original included: a
    gate with ``--reference`` runs two forwards per image, and an eager original would keep half of the work
    uncompiled (issue 26.2). The original still runs in IEEE float32 outside autocast; a compiled graph may fuse
    and reorder its float32 arithmetic, so the compiled pair differs by float32 rounding, not by 0 (the
    benchmarks check top-1 identical to eager and the logits within the gate's float32 tolerance)."""
    from cvt_port.attention import set_attention

    for c in candidates.models:
        if c.kind != ModelKind.REFERENCE:
            set_attention(c.module, attention)
        if compile:
            c.module = torch.compile(c.module)
