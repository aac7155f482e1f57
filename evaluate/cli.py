"""``python -m evaluate``: top-1/top-5 of a converted CvT (and its original) on ImageNet validation data.

Data flows one way: flags -> variant config -> data source and models -> Lightning validate ->
torchmetrics -> gate -> reports. With no arguments it runs the bundled end-to-end default
(:mod:`evaluate.default`). Exit status: 0 gate passed, 1 a check failed (or none could be made),
2 bad input or usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from cvt_port.errors import BadInput

DEFAULT_OUTPUT = "cvt-port-output"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluate",
        description="Evaluate a converted CvT (and optionally the original .pth, on the same batches) on an "
        "ImageNet-style validation set, and gate the release. With no arguments: the bundled end-to-end demo. "
        "Exit status: 0 gate passed, 1 a check failed or none could be made, 2 bad input.",
        epilog="Repeated runs: `python -m evaluate cache build --cache-dir DIR [the same model/config/data/subset/"
        "preprocessing flags]` decodes and resizes once; then pass --cache-dir DIR.",
    )
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--config", metavar="VARIANT", help="variant name or configs/<variant>.yaml (preprocessing, "
                   "reference accuracy, gate); default: the variant recorded in the model folder's conversion.json")
    g.add_argument("--model", metavar="DIR|HUB_ID", help="converted folder (loaded with cvt_port.load_model), or any "
                   "Hugging Face image-classification folder or Hub id")
    g.add_argument("--stock", action="store_true", help="load --model with the stock CvtForImageClassification (exact "
                   "GELU) instead of cvt_port.load_model (QuickGELU, as the original)")
    g.add_argument("--with-stock", action="store_true", help="also evaluate the stock class as an extra row")
    g.add_argument("--reference", metavar="PTH", help="original release .pth: evaluated through the reference "
                   "implementation on the very same batches, and compared image by image")
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="PATH|HUB_ID", help="ImageFolder val/<wnid>/*.JPEG, a flat ILSVRC2012_val_* folder "
                   "with a labels file, a datasets folder/parquet, or a Hub dataset id")
    d.add_argument("--labels-file", metavar="FILE", help="labels for a flat folder: LOC_val_solution.csv, or one "
                   "WordNet id or class index per line")
    d.add_argument("--label-numbering", choices=("index0", "devkit"), help="what class numbers in a labels file "
                   "mean: index0 = 0-based position among the 1000 sorted WordNet ids; devkit = the ILSVRC2012 devkit's "
                   "1-based ids (needs --devkit-map). Required when the labels are numbers")
    d.add_argument("--devkit-map", metavar="FILE", help="with --label-numbering devkit: 1000 lines "
                   "'<ILSVRC2012_ID> <WNID>', the synset table of the devkit's data/meta.mat")
    d.add_argument("--split", default="validation", help="dataset split for datasets/Hub data (default: validation)")
    d.add_argument("--image-column", help="image column of a datasets dataset (default: auto)")
    d.add_argument("--label-column", help="label column of a datasets dataset (default: auto)")
    d.add_argument("--subset", type=int, metavar="N", help="evaluate a deterministic class-balanced subset of N images")
    d.add_argument("--seed", type=int, default=0, help="seed of the --subset choice (default: 0)")
    d.add_argument("--subset-file", metavar="FILE", help="evaluate exactly these image ids (one per line)")
    d.add_argument("--preprocessing", choices=("release", "hf", "both"), default="release",
                   help="release: the release's evaluation rules (default); hf: the model folder's image processor; "
                   "both: the converted model under each, in the same pass")
    d.add_argument("--skip-bad-images", action="store_true", help="count and report unreadable images instead of failing")
    r = p.add_argument_group("how to run")
    r.add_argument("--batch-size", type=int, default=64, help="images per batch and device (default: 64)")
    r.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader worker processes per device for decoding and resizing (default: min(4, cores))")
    r.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning; default: auto)")
    r.add_argument("--devices", default="auto", help="number of devices or 'auto' (Lightning)")
    r.add_argument("--num-nodes", type=int, default=1, help="number of nodes (Lightning; SLURM and torchrun are detected)")
    r.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default: auto)")
    r.add_argument("--precision", default="32-true", help="Lightning precision: 32-true (default), bf16-mixed, 16-mixed")
    r.add_argument("--cache-dir", metavar="DIR", help="read preprocessed pixels from this cache (made by "
                   "`python -m evaluate cache build ... --cache-dir DIR`); refused if built for other images or settings")
    r.add_argument("--attention", choices=("einsum", "sdpa"), default="einsum",
                   help="attention of the Hugging Face models: einsum (as transformers) or fused "
                   "scaled_dot_product_attention with the CvT scale (default: einsum)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile every model before the pass (a short last batch is padded: one graph, no recompilation)")
    r.add_argument("--output", metavar="DIR", help=f"where reports go (default: ./{DEFAULT_OUTPUT}/)")
    r.add_argument("--verbose", action="store_true", help="show Lightning's own messages")
    return p


def quiet_libraries(verbose: bool) -> None:
    """Keep the terminal for our progress bar and summary: Lightning's banners (GPU available...,
    tips) and transformers' loading bars are hidden unless --verbose. Lightning resets its
    logger's level when imported, so it is imported here first."""
    if verbose:
        return
    import lightning  # noqa: F401
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cache"]:
        return cache_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries(args.verbose)
    try:
        if not argv or (args.model is None and args.data is None and args.reference is None):
            from .default import prepare_default

            args = prepare_default(args)
        from .run import run

        return run(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cache_main(argv: list[str]) -> int:
    """``python -m evaluate cache build --cache-dir DIR [the run's data, subset and preprocessing flags]``;
    ``python -m evaluate cache verify --cache-dir DIR`` (exit 0 intact, 1 damaged, 2 not a cache)."""
    if argv[:1] == ["verify"]:
        return cache_verify_main(argv[1:])
    parser = build_parser()
    parser.prog = "python -m evaluate cache build"
    parser.description = ("Decode and resize a data set once into memory-mappable uint8 files keyed by the "
                          "preprocessing settings and the image list; later runs read it with --cache-dir DIR.")
    if argv[:1] != ["build"]:
        parser.error("the cache commands are: cache build, cache verify")
    args = parser.parse_args(argv[1:])
    quiet_libraries(args.verbose)
    try:
        if not args.cache_dir:
            raise BadInput("cache build needs --cache-dir DIR")
        from .run import build_cache_command

        return build_cache_command(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cache_verify_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluate cache verify",
                                     description="Check every image and file of a cache against its checksums. "
                                     "Exit status: 0 intact, 1 damaged entries, 2 not a cache.")
    parser.add_argument("--cache-dir", metavar="DIR", required=True, help="the cache folder to check")
    args = parser.parse_args(argv)
    from .cache import verify_cache

    try:
        report = verify_cache(args.cache_dir)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0 if report.intact else 1


if __name__ == "__main__":
    sys.exit(main())
