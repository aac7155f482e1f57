"""The model card of a converted folder, built with huggingface_hub's ``ModelCard``/``ModelCardData``.

Why the API and not a text template: the Hub reads the card's YAML header (license, base model,
datasets, tags, later ``model-index``), and ``ModelCardData`` writes it the way the Hub parses it.
The card is built in one place so that later steps extend it rather than rewrite it: an evaluation
that passed its gate (``python -m evaluate --update-card``, :mod:`evaluate.reports.release`) loads the card
(``ModelCard.load``), puts its ``EvalResult`` entries in ``card.data.eval_results`` (replacing earlier
results on the same dataset and split) and replaces the file; the converter never writes results it did
not measure.

The body is the parity certificate: the figures measured during the conversion (the same facts as
``conversion.json``), which say that the folder computes what the original release computed.
"""

from __future__ import annotations

from pathlib import Path

from .variants import Variant

# The original release (github.com/microsoft/CvT) is published under the MIT license; a conversion
# changes the weights' names, not their terms.
LICENSE = "mit"
TAGS = ("image-classification", "cvt", "cvt-port")
# Hub dataset ids. Every released head is ImageNet-1k; the "22k" files were pre-trained on ImageNet-22k
# (the Hub's imagenet-21k, the same 21,841-class release) and fine-tuned on ImageNet-1k.
IMAGENET_1K, IMAGENET_22K = "imagenet-1k", "imagenet-21k"


def card_datasets(variant: Variant) -> list[str]:
    """The Hub datasets the weights were trained on, as far as the variant's config says."""
    out = []
    if str(variant.pretrained_on or "").lower().replace("-", "") == "imagenet22k":
        out.append(IMAGENET_22K)
    if variant.labels == "imagenet-1k":
        out.append(IMAGENET_1K)
    return out


def card_data(facts: dict, variant: Variant):
    """The card's YAML header. ``base_model`` is the original's Hub name (the variant's ``hub_id``),
    absent for models that have none (the bundled digits model)."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="image-classification",
        base_model=variant.hub_id or None,
        datasets=card_datasets(variant) or None,
        tags=list(TAGS),
    )


def loading_recipe(parity: dict) -> str:
    """The card's "how to load" section (issue 14): the exact recipe first, then what the stock path costs.
    Kept apart from the rest of the card so the card's layout can move without touching it."""
    return f"""## How to load: `trust_remote_code=True`

This folder carries its own model class and image processor (`modeling_cvt_port.py`,
`image_processing_cvt_port.py`, named in `auto_map`). Load them for exact results:

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("path/to/this/folder", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("path/to/this/folder", trust_remote_code=True)
classify = pipeline("image-classification", model="path/to/this/folder", trust_remote_code=True)
```

The model computes what the original computed (QuickGELU; max abs logit difference
{parity['max_abs_logit_diff']:.3g} on the probe batch); the processor is the release's evaluation
preprocessing exactly (PIL only, centre crop rounded as the release did, any colour mode converted to RGB).

Without `trust_remote_code` the stock classes load this folder with no error, at a cost: the stock
`CvtForImageClassification` computes exact GELU and drifts from the original by
**{parity['stock_gelu_max_abs_logit_diff']:.3g}** in max abs logit on the probe batch (top-1 agreement
{100 * parity['stock_gelu_top1_agreement']:.0f}% there); the stock ConvNeXt processor crops one pixel off
the release's centre on some images, uses torchvision's resize when torchvision is installed, and
rejects grey-level images.
"""


def card_body(facts: dict) -> str:
    """The parity certificate (the figures of ``conversion.json``) and how to load the folder exactly."""
    p, s, v, pre = facts["parity"], facts["source"], facts["variant"], facts["preprocessing"]
    hub = f"[{facts['hub_id']}](https://huggingface.co/{facts['hub_id']})" if facts.get("hub_id") else "none"
    q = p["probe"]
    probe = f"{q['shape']} seeded inputs (seed {q['seed']}), {q['dtype']}, {q['device']}"
    ours = f"{p['max_abs_logit_diff']:.3g} (tolerance {p['tolerance']:g})"
    stock = f"{p['stock_gelu_max_abs_logit_diff']:.3g} (max abs logit {p['max_abs_logit']:.3g})"
    ver = facts["versions"]
    tools = f"cvt_port {facts.get('cvt_port_version', '?')}, torch {ver['torch']}, transformers {ver['transformers']}"
    return f"""
# {v}: original CvT checkpoint converted to Hugging Face

Converted by `cvt_port` from the original Microsoft CvT release file, and checked logit for logit
against a reference implementation of the original model before it was saved. The conversion checks
parity only: accuracy on ImageNet is measured by `python -m evaluate`, which adds its results to this
card when its release gate passes.

{loading_recipe(p)}
## Parity certificate

| fact | value |
|---|---|
| source file | `{s['file']}` |
| source sha256 | `{s['sha256']}` |
| variant | `{v}` (Hub counterpart: {hub}) |
| evaluation size | {pre['img_size']} ({pre['resize']}, {pre['interpolation']}) |
| parity probe | {probe} |
| max abs logit difference, `cvt_port.load_model` vs original | {ours} |
| max abs logit difference, stock `CvtForImageClassification` vs original | {stock} |
| top-1 agreement, stock class vs original (probe) | {p['stock_gelu_top1_agreement']:.3g} |
| converted with | {tools} |
| converted at | {facts.get('created', '?')} |

## Activation: load with `cvt_port.load_model`

The original CvT models were trained with **QuickGELU** (`x * sigmoid(1.702 x)`); the stock
`CvtForImageClassification` hard-codes the exact (erf) GELU. `config.json` records
`"hidden_act": "quick_gelu"`, which the stock class ignores. Exact results:

```python
import cvt_port
model = cvt_port.load_model("path/to/this/folder")  # QuickGELU in place: computes what the original computed
```

`CvtForImageClassification.from_pretrained(...)` loads this folder with no missing or unexpected keys,
but drifts from the original by the figure in the table above (on the probe batch).

`preprocessor_config.json` reproduces the release's evaluation preprocessing (spec: resize, crop,
bicubic, ImageNet mean/std). Machine-readable facts are in `conversion.json`.
"""


def model_card(facts: dict, variant: Variant):
    """The card as a ``huggingface_hub.ModelCard`` (header from :func:`card_data`, body from :func:`card_body`)."""
    from huggingface_hub import ModelCard

    return ModelCard(f"---\n{card_data(facts, variant).to_yaml()}\n---\n{card_body(facts)}")


def write_model_card(folder: Path, facts: dict, variant: Variant) -> Path:
    """``folder/README.md``; returns its path."""
    path = Path(folder) / "README.md"
    model_card(facts, variant).save(path)
    return path


__all__ = ["model_card", "write_model_card", "card_data", "card_body", "card_datasets", "LICENSE", "TAGS"]
