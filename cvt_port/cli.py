"""``python -m cvt_port convert CHECKPOINT OUTPUT_DIR``: exit 0 done, 1 parity failed, 2 bad input."""

from __future__ import annotations

import argparse
import sys

from .errors import BadInput, ParityError
from .hub import PushError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cvt_port",
        description="Convert Microsoft's original CvT checkpoints to Hugging Face, proving parity on every conversion.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conv = sub.add_parser(
        "convert",
        help="convert an original .pth checkpoint into a Hugging Face model folder",
        description="Convert an original CvT .pth checkpoint into a Hugging Face model folder. The converted "
        "model is compared with the original on a probe batch before anything is saved. "
        "Exit status: 0 done, 1 parity check (or upload) failed, 2 bad input.",
    )
    conv.add_argument("checkpoint", metavar="CHECKPOINT", help="path of the original .pth file (e.g. CvT-13-224x224-IN-1k.pth)")
    conv.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder to write the Hugging Face model into")
    conv.add_argument(
        "--variant",
        metavar="NAME",
        help="variant name from configs/ (e.g. cvt-13-224) or a variant YAML path; default: inferred from the "
        "weights and the file name",
    )
    conv.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists and is not empty")
    conv.add_argument("--push-to-hub", metavar="REPO_ID", help="after a verified conversion, upload the folder to this Hub repo")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .conversion import convert  # heavy imports after argument parsing, so --help is instant

    try:
        out = convert(args.checkpoint, args.output_dir, variant=args.variant, overwrite=args.overwrite)
        if args.push_to_hub:
            from .hub import push_to_hub

            print(f"pushed to {push_to_hub(out, args.push_to_hub)}", file=sys.stderr)
    except (BadInput, ParityError, PushError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
