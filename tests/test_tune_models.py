"""--attention applies to the Hugging Face models, the original (the reference) keeps its own attention; --compile
applies to every model alike, the original included (issue 26.2: an eager original would keep half of a gate's
work uncompiled)."""

from __future__ import annotations

import torch
from torch import nn

from evaluate.models.candidates import Candidates, tune_models
from evaluate.models.folders import Candidate
from evaluate.plan import ModelKind


def test_compile_compiles_the_original_alike_and_leaves_its_attention_alone():
    reference, converted, stock = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
    models = [Candidate("converted", ModelKind.EXACT, converted, "release"),
              Candidate("original", ModelKind.REFERENCE, reference, "release"),
              Candidate("stock", ModelKind.STOCK, stock, "release")]
    tune_models(Candidates(models, "converted", "original", None), "einsum", compile=True)
    compiled = torch._dynamo.eval_frame.OptimizedModule
    assert isinstance(models[1].module, compiled) and models[1].module._orig_mod is reference
    assert isinstance(models[0].module, compiled) and models[0].module._orig_mod is converted
    assert isinstance(models[2].module, compiled) and models[2].module._orig_mod is stock
