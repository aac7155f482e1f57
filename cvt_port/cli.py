"""``python -m cvt_port convert CHECKPOINT OUTPUT_DIR`` (or a folder of checkpoints and an output root, or the
legacy Hugging Face script's ``--cvt_model --image_size --cvt_file_name --pytorch_dump_folder_path``).

This is the only module that sees argparse: the flags become arguments of :func:`cvt_port.conversion.convert`
or :func:`cvt_port.folder.convert_many` (the Python API under the command).

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
from pathlib import Path

from .errors import EXIT_STATUS_HELP, BadInput, ExitStatus, ParityError, internal_error
from .hub import PushError


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that ``finally``/``except`` clean-up runs."""


# The legacy script's default --cvt_file_name, verbatim (a Windows path: on other systems a file of that name).
LEGACY_DEFAULT_FILE = r"cvtmodels\CvT-w24-384x384-IN-22k.pth"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cvt_port",
        description="Convert Microsoft's original CvT checkpoints to Hugging Face, proving parity on every conversion.",
        epilog=EXIT_STATUS_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conv = sub.add_parser(
        "convert",
        help="convert an original .pth checkpoint (or a folder of them) into Hugging Face model folders",
        description="Convert an original CvT .pth checkpoint into a Hugging Face model folder. The converted "
        "model is compared with the original on a probe batch before anything is saved; an interrupted or "
        "failed conversion leaves no folder behind. Given a folder, every .pth file in it is converted into "
        "OUTPUT_DIR/<file name without .pth>, each variant inferred, and one summary table is printed. "
        "The legacy Hugging Face script's flags (--cvt_model, --image_size, --cvt_file_name, "
        "--pytorch_dump_folder_path) are accepted with the same meaning, checked against the weights.",
        epilog=EXIT_STATUS_HELP + " Here 1 means the parity check (or the upload) failed; for a folder, the "
        "status is the worst of its files'.",
    )
    conv.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?",
                      help="path of the original .pth file (e.g. CvT-13-224x224-IN-1k.pth), or a folder of them")
    conv.add_argument("output_dir", metavar="OUTPUT_DIR", nargs="?",
                      help="folder to write the Hugging Face model into (for a folder of files: one folder per file "
                      "inside it)")
    conv.add_argument(
        "--variant",
        metavar="NAME",
        help="variant name from configs/ (e.g. cvt-13-224) or a variant YAML path; default: inferred from the "
        "weights and the file name",
    )
    conv.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists and is not empty")
    conv.add_argument(
        "--push-to-hub", metavar="REPO_ID",
        help="after the parity check, upload the folder to this Hub repo. The model's ACCURACY IS NOT CHECKED by "
        "this upload; for a release, run `python -m evaluate --model OUTPUT_DIR --reference CHECKPOINT --data ...` "
        "first and publish only what passed",
    )
    legacy = conv.add_argument_group(
        "legacy Hugging Face script flags",
        "the flags of transformers' convert_cvt_original_pytorch_checkpoint_to_pytorch.py, so that a release "
        "script switches by changing only the program it calls. --cvt_model and --image_size must agree with "
        "what the weights and the release file name say (else exit 2); left out, they are read off the weights "
        "(the legacy defaults, cvt-w24 at 384, are not assumed)",
    )
    legacy.add_argument("--cvt_model", metavar="NAME",
                        help="the model's name: cvt-13, cvt-21 or cvt-w24 (an owner prefix such as microsoft/ and "
                        "a full variant name such as cvt-13-384-22k are accepted)")
    legacy.add_argument("--image_size", metavar="PIXELS", type=int,
                        help="the evaluation image size of the release, 224 or 384")
    legacy.add_argument("--cvt_file_name", metavar="FILE",
                        help="the original .pth file (same as CHECKPOINT); legacy default, when only "
                        f"--pytorch_dump_folder_path is given: {LEGACY_DEFAULT_FILE}")
    legacy.add_argument("--pytorch_dump_folder_path", metavar="DIR",
                        help="folder to write the Hugging Face model into (same as OUTPUT_DIR)")
    return parser


def source_and_output(args: argparse.Namespace) -> tuple[str, str]:
    """CHECKPOINT/OUTPUT_DIR, or their legacy spellings: each given once (else BadInput, exit 2)."""
    positional = [p for p in (args.checkpoint, args.output_dir) if p is not None]
    source, output = args.cvt_file_name, args.pytorch_dump_folder_path
    if source is None and positional:
        source = positional.pop(0)
    if output is None and positional:
        output = positional.pop(0)
    if positional:
        raise BadInput(f"{positional[0]}: one path too many; give CHECKPOINT and OUTPUT_DIR once each "
                       "(--cvt_file_name is CHECKPOINT, --pytorch_dump_folder_path is OUTPUT_DIR)")
    if source is None and output is not None and args.pytorch_dump_folder_path is not None:
        source = LEGACY_DEFAULT_FILE
        if not Path(source).exists():
            raise BadInput(f"--cvt_file_name not given, and its legacy default {source} does not exist here; "
                           "pass --cvt_file_name FILE")
    if source is None or output is None:
        raise BadInput("give the checkpoint and the output folder: python -m cvt_port convert CHECKPOINT OUTPUT_DIR "
                       "(or --cvt_file_name FILE --pytorch_dump_folder_path DIR)")
    return source, output


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
        source, output = source_and_output(args)
        if Path(source).is_dir():
            return _convert_folder(args, source, output, signals)
        from .conversion import convert  # heavy imports after argument parsing, so --help is instant

        out = convert(source, output, variant=args.variant, overwrite=args.overwrite, log=signals.log,
                      cvt_model=args.cvt_model, image_size=args.image_size)
        signals.check()
        signals.immediate = True
        if args.push_to_hub:
            from .hub import push_to_hub

            print(f"{UNCHECKED_UPLOAD} to {args.push_to_hub}", file=sys.stderr)
            print(f"pushed to {push_to_hub(out, args.push_to_hub)} (parity checked; accuracy NOT checked)",
                  file=sys.stderr)
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


UNCHECKED_UPLOAD = ("warning: uploading a model whose accuracy was not checked (the conversion proved parity with "
                    "the original on a probe batch only; gate a release with `python -m evaluate --model FOLDER "
                    "--reference CHECKPOINT --data ...` before publishing it)")


def _convert_folder(args: argparse.Namespace, folder: str, output_root: str, signals: _Signals) -> int:
    """Every release file of ``folder``: the summary table on stdout, the worst file's exit status."""
    if args.push_to_hub:
        raise BadInput(f"--push-to-hub {args.push_to_hub}: uploads one converted folder; convert the files of "
                       f"{folder} first, then push each folder")
    from .folder import convert_many, summary_table, worst_status

    results = convert_many(folder, output_root, variant=args.variant, overwrite=args.overwrite, log=signals.log,
                           cvt_model=args.cvt_model, image_size=args.image_size)
    signals.check()
    print(summary_table(results))
    return worst_status(results)


if __name__ == "__main__":
    sys.exit(main())
