"""The bundled default: ``python -m evaluate`` with no arguments proves the whole pipeline for real.

It converts the bundled tiny CvT (original release format, trained on scikit-learn's digits by
``python -m evaluate.bundled.build``) with cvt_port, then evaluates in one pass over the bundled
validation images the original checkpoint (reference implementation), the converted model
(exact activation) and the converted model through the stock class (exact GELU), and gates the
conversion against the accuracy recorded in ``configs/cvt-tiny-digits.yaml``. No network.

The demo is a plan like any other (:func:`demo_plan`); the CLI runs it through the same API.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from cvt_port.variants import get_variant

from .plan import DEFAULT_OUTPUT, DataSpec, EvalPlan, ModelSpec, ReportSpec, RunSpec

BUNDLED = Path(__file__).resolve().parent / "bundled"
CHECKPOINT = BUNDLED / "cvt-tiny-digits.pth"
DATA = BUNDLED / "digits" / "val"
VARIANT = "cvt-tiny-digits"


def demo_plan(data: DataSpec = DataSpec(), run: RunSpec | None = None, report: ReportSpec = ReportSpec()) -> EvalPlan:
    """The demo's plan: the bundled checkpoint converted into ``<output>/cvt-tiny-digits-hf`` (done here,
    replacing the folder: it is the demo's own output), evaluated beside the original and the stock
    class on the bundled images. ``data`` keeps its subset/preprocessing choices; its source is replaced."""
    from cvt_port import convert

    output = Path(report.output if report.output is not None else DEFAULT_OUTPUT)
    converted = output / f"{VARIANT}-hf"
    plan = EvalPlan(
        models=ModelSpec(model=str(converted), config=VARIANT, reference=CHECKPOINT, with_stock=True),
        data=dataclasses.replace(data, source=str(DATA)),
        run=run if run is not None else RunSpec(),
        report=dataclasses.replace(report, output=output),
    )
    variant = get_variant(VARIANT)
    print(f"cvt-port demo: converting the bundled original checkpoint {CHECKPOINT.name} -> {converted}", file=sys.stderr)
    convert(CHECKPOINT, converted, variant=variant, overwrite=True)
    print(f"cvt-port demo: evaluating original, converted and stock class on {DATA} "
          f"({variant.reference.get('num_samples')} images)", file=sys.stderr)
    return plan
