"""The bundled default: ``python -m evaluate`` with no arguments proves the whole pipeline for real.

It converts the bundled tiny CvT (original release format, trained on scikit-learn's digits by
``python -m evaluate.bundled.build``) with cvt_port, then evaluates in one pass over the bundled
validation images the original checkpoint (reference implementation), the converted model
(exact activation) and the converted model through the stock class (exact GELU), and gates the
conversion against the accuracy recorded in ``configs/cvt-tiny-digits.yaml``. No network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvt_port.variants import get_variant

BUNDLED = Path(__file__).resolve().parent / "bundled"
CHECKPOINT = BUNDLED / "cvt-tiny-digits.pth"
DATA = BUNDLED / "digits" / "val"
VARIANT = "cvt-tiny-digits"


def prepare_default(args: argparse.Namespace) -> argparse.Namespace:
    from cvt_port import convert

    from .cli import DEFAULT_OUTPUT

    output = Path(args.output or DEFAULT_OUTPUT)
    converted = output / f"{VARIANT}-hf"
    variant = get_variant(VARIANT)
    print(f"cvt-port demo: converting the bundled original checkpoint {CHECKPOINT.name} -> {converted}", file=sys.stderr)
    # the folder is this demo's own output: replace it on every run
    convert(CHECKPOINT, converted, variant=variant, overwrite=True)
    print(f"cvt-port demo: evaluating original, converted and stock class on {DATA} "
          f"({variant.reference.get('num_samples')} images)", file=sys.stderr)
    args.model, args.reference, args.data, args.config = str(converted), str(CHECKPOINT), str(DATA), VARIANT
    args.with_stock, args.output = True, str(output)
    return args
