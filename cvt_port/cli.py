"""``python -m cvt_port convert CHECKPOINT OUTPUT_DIR``.

Exit status (the contract in :mod:`cvt_port.errors`, shared with ``python -m evaluate``): 0 converted
and verified, 1 parity check or upload failed, 2 bad input or usage, 4 internal error (one line; the
traceback is written to a file), 130 on SIGINT, 143 on SIGTERM. Whatever ends the conversion, no
half-written folder is left: the work happens in a temporary folder beside the target, removed on the
way out.

Signals are acted on between the conversion's steps, not where they land: an exception raised at an
arbitrary point (inside ``import transformers`` on the main thread while a worker thread imports
safetensors) can leave an import lock held and deadlock the worker the clean-up then waits for. So a
SIGINT or SIGTERM is noted, and the next progress line raises it (at most a few seconds on CvT-W24);
SIGTERM (a scheduler's time limit, ``kill``) becomes :class:`Terminated` so that the same clean-up runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .errors import EXIT_STATUS_HELP, BadInput, ExitStatus, ParityError, internal_error
from .hub import PushError


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that ``finally``/``except`` clean-up runs."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cvt_port",
        description="Convert Microsoft's original CvT checkpoints to Hugging Face, proving parity on every conversion.",
        epilog=EXIT_STATUS_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conv = sub.add_parser(
        "convert",
        help="convert an original .pth checkpoint into a Hugging Face model folder",
        description="Convert an original CvT .pth checkpoint into a Hugging Face model folder. The converted "
        "model is compared with the original on a probe batch before anything is saved; an interrupted or "
        "failed conversion leaves no folder behind.",
        epilog=EXIT_STATUS_HELP + " Here 1 means the parity check (or the upload) failed.",
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


class _Signals:
    """SIGINT/SIGTERM noted by the handler and raised at the next :meth:`check` (see the module docstring)."""

    def __init__(self):
        self.pending: int | None = None
        self.immediate = False  # after the conversion (the upload): no worker threads, raise where it lands

    def note(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signum
        if self.immediate:
            self.check()

    def check(self) -> None:
        if self.pending is not None:
            raise KeyboardInterrupt if self.pending == signal.SIGINT else Terminated

    def log(self, msg: str) -> None:
        """The conversion's progress callback: a noted signal stops it here, between two steps."""
        self.check()
        print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signals, handlers = _Signals(), {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, signals.note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        from .conversion import convert  # heavy imports after argument parsing, so --help is instant

        out = convert(args.checkpoint, args.output_dir, variant=args.variant, overwrite=args.overwrite,
                      log=signals.log)
        signals.check()
        signals.immediate = True
        if args.push_to_hub:
            from .hub import push_to_hub

            print(f"pushed to {push_to_hub(out, args.push_to_hub)}", file=sys.stderr)
    except (BadInput, ParityError, PushError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted (SIGINT): stopped, no half-written folder left", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except Terminated:
        print("terminated (SIGTERM): stopped, no half-written folder left", file=sys.stderr)
        return ExitStatus.TERMINATED
    except Exception as exc:  # a bug, not the user's input: one line, the traceback in a file
        return internal_error(exc, "cvt_port")
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    print(out)
    return ExitStatus.PASS


if __name__ == "__main__":
    sys.exit(main())
