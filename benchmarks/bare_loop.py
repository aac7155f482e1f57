"""``python -m benchmarks.bare_loop``: ``model(pixel_values)`` on pre-made float32 tensors; prints one JSON line.

The denominator of the harness overhead and the loop of the batch-size sweep: the product's own model loader
(:func:`cvt_port.load_model`, :func:`cvt_port.attention.set_attention`) and nothing else of the harness. Per
batch size: ``--warmup-batches`` untimed batches, then ``--passes`` timed passes over ``--images`` images in
batches of that size (the last one smaller, as a DataLoader's). ``--compare``: also the max |logit diff| of
SDPA vs einsum (float32) and of bf16 autocast vs float32 on one batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time


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


def time_loop(model_dir: str, img_size: int, images: int, batch_sizes: list[int], passes: int = 1,
              warmup_batches: int = 0, attention: str = "einsum", precision: str = "32-true",
              compile: bool = False, compare: bool = False, device: str = "cpu") -> dict:
    """Images per second of every pass at every batch size (and the comparisons, with ``compare``)."""
    import torch

    import cvt_port
    from cvt_port.attention import set_attention

    dev = torch.device(device)
    t0 = time.perf_counter()
    model = set_attention(cvt_port.load_model(model_dir), attention).to(dev)
    out = {"threads": torch.get_num_threads(), "load_s": round(time.perf_counter() - t0, 3), "attention": attention,
           "precision": precision, "compile": compile, "device": str(dev), "batch_sizes": {}}
    fn = torch.compile(model) if compile else model

    def autocast():
        if precision == "bf16-mixed":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)
    shape = (3, img_size, img_size)
    for bs in batch_sizes:
        n = max(images, bs)  # at least one full batch of every size
        sizes = [bs] * (n // bs) + ([n % bs] if n % bs else [])
        batches = [torch.randn(k, *shape, generator=g).to(dev) for k in sizes]
        rec = {"images": n, "batches": sizes, "pass_s": [], "pass_ips": []}
        with torch.inference_mode(), autocast():
            t = time.perf_counter()
            for _ in range(warmup_batches):
                fn(pixel_values=batches[0]).logits.float()
            sync()
            rec["warmup_s"] = round(time.perf_counter() - t, 3)
            for _ in range(passes):
                t = time.perf_counter()
                for x in batches:
                    fn(pixel_values=x).logits.float()
                sync()
                dt = time.perf_counter() - t
                rec["pass_s"].append(round(dt, 4))
                rec["pass_ips"].append(n / dt)
        out["batch_sizes"][str(bs)] = rec

    if compare:
        x = torch.randn(min(8, images), *shape, generator=torch.Generator().manual_seed(1)).to(dev)
        with torch.inference_mode():
            set_attention(model, "einsum")
            ref = model(pixel_values=x).logits.float()
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                bf16 = model(pixel_values=x).logits.float()
            set_attention(model, "sdpa")
            sdpa = model(pixel_values=x).logits.float()
            set_attention(model, attention)
        out["compare"] = {
            "images": int(x.shape[0]),
            "sdpa_vs_einsum_max_abs_logit_diff": float((sdpa - ref).abs().max()),
            "bf16_vs_fp32_max_abs_logit_diff": float((bf16 - ref).abs().max()),
            "bf16_vs_fp32_top1_agreement": float((bf16.argmax(-1) == ref.argmax(-1)).float().mean()),
            "max_abs_logit": float(ref.abs().max()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    out = time_loop(a.model, a.img_size, a.images, [int(v) for v in a.batch_sizes.split(",")], passes=a.passes,
                    warmup_batches=a.warmup_batches, attention=a.attention, precision=a.precision,
                    compile=a.compile, compare=a.compare, device=a.device)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
