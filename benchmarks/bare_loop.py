"""``python -m benchmarks.bare_loop``: ``model(pixel_values)`` on pre-made float32 tensors; prints one JSON line.

The denominator of the harness overhead and the loop of the batch-size sweep, in a fresh process: the product's
own model loader (:func:`cvt_port.load_model`, :func:`cvt_port.attention.set_attention`) and nothing else of
the harness. Per batch size: ``--warmup-batches`` untimed batches, then ``--passes`` timed passes over
``--images`` images in batches of that size (the last one smaller, as a DataLoader's). ``--compare``: also the
max |logit diff| of SDPA vs einsum (float32) and of bf16 autocast vs float32 on one batch. The loop itself is
:func:`benchmarks.timing.time_loop`; this module is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bare_loop", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a converted model folder")
    p.add_argument("--img-size", type=int, required=True)
    p.add_argument("--images", type=int, required=True, help="images per pass (at least one batch)")
    p.add_argument("--batch-sizes", required=True, help="comma-separated, e.g. 1,8,32")
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--warmup-batches", type=int, default=0)
    p.add_argument("--attention", default="einsum", choices=("einsum", "sdpa"))
    p.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compare", action="store_true")
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    from .timing import time_loop

    a = build_parser().parse_args(argv)
    out = time_loop(a.model, a.img_size, a.images, [int(v) for v in a.batch_sizes.split(",")], passes=a.passes,
                    warmup_batches=a.warmup_batches, attention=a.attention, precision=a.precision,
                    compile=a.compile, compare=a.compare, device=a.device)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
