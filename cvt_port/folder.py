"""Converting every release file of a folder in one call: one output folder per file, one summary table.

Release engineers get the seven ``.pth`` files in one folder; converting them one command at a time
repeats the slowest step (importing transformers) seven times. Here each file's variant is inferred
as for a single file and each is converted and verified on its own (one bad file does not stop the
others); the exit status is the worst of them under the contract in :mod:`cvt_port.errors`.

What can be checked before any file is read is checked first, for every file: the source folder holds
release files, and every output folder is free (or ``overwrite``) and writable. A user waiting through
six conversions should not learn then that the seventh's output folder is taken.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import BadInput, ExitStatus, ParityError, first_line, internal_error

RELEASE_SUFFIXES = (".pth",)

_STATUS_WORDS = {
    ExitStatus.PASS: "converted",
    ExitStatus.FAIL: "parity failed",
    ExitStatus.BAD_INPUT: "bad input",
    ExitStatus.INTERNAL_ERROR: "internal error",
}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FileResult:
    """One file's conversion: where it went, its status, and the parity figures when it was converted."""

    source: Path
    output: Path
    status: ExitStatus
    variant: str | None = None
    max_abs_logit_diff: float | None = None
    stock_gelu_max_abs_logit_diff: float | None = None
    seconds: float = 0.0
    message: str = ""  # the one-line error when the file was not converted


def worst_status(results: list[FileResult]) -> ExitStatus:
    """The worst status of a folder's conversions. Within 0-4 the contract's numbers rank severity: an
    internal error (4) says least about the files, bad input (2) means a file could not be judged, a
    failed check (1) that one was judged and failed. Interrupts (130/143) end the whole call instead."""
    return max((r.status for r in results), default=ExitStatus.PASS)


def release_files(folder: Path) -> list[Path]:
    """The folder's ``.pth`` files (not its subfolders), sorted by name."""
    if not folder.exists():
        raise BadInput(f"{folder}: no such folder; give a folder of original CvT .pth files (or one file)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in RELEASE_SUFFIXES and p.is_file())
    if not files:
        raise BadInput(f"{folder}: holds no .pth files; give a folder of original CvT release files")
    return files


def output_folder(output_root: Path, source: Path) -> Path:
    """Each file's folder under the output root is named after the file (known before it is read)."""
    return output_root / source.stem


def convert_many(
    folder: str | Path,
    output_root: str | Path,
    variant=None,
    overwrite: bool = False,
    log: Callable[[str], None] = _stderr,
    cvt_model: str | None = None,
    image_size: int | None = None,
) -> list[FileResult]:
    """Convert every ``.pth`` file of ``folder`` into ``output_root/<file stem>``; one result per file.

    Raises :class:`BadInput` before any file is read when the folder holds no release files or an output
    folder cannot be used; afterwards a file's failure is its result, not an exception. ``variant``,
    ``cvt_model`` and ``image_size`` apply to every file (see :func:`cvt_port.conversion.convert`).
    KeyboardInterrupt and SIGTERM stop the call: folders already converted are complete and kept.
    """
    from .conversion import check_output_dir, convert
    from .legacy import LegacyHints
    from .variants import all_variants, get_variant

    folder, output_root = Path(folder), Path(output_root)
    files = release_files(folder)
    if output_root.exists() and not output_root.is_dir():
        raise BadInput(f"{output_root}: exists and is not a folder; give a folder for the converted models")
    requested = get_variant(variant) if isinstance(variant, (str, Path)) else variant
    hints = LegacyHints(cvt_model, image_size)
    if hints:
        hints.check_known(all_variants(), requested)
    for source in files:
        check_output_dir(output_folder(output_root, source), overwrite)

    results = []
    for i, source in enumerate(files, 1):
        out = output_folder(output_root, source)
        log(f"== {i}/{len(files)}: {source.name} -> {out}")
        t0 = time.perf_counter()
        try:
            convert(source, out, variant=requested, overwrite=overwrite, log=log,
                    cvt_model=cvt_model, image_size=image_size)
        except (BadInput, ParityError) as exc:
            log(f"error: {exc}")
            msg = first_line(exc)  # the table's row names the file already
            results.append(FileResult(source, out, ExitStatus(exc.exit_code), seconds=time.perf_counter() - t0,
                                      message=msg.removeprefix(f"{source}: ")))
            continue
        except Exception as exc:  # a bug: its traceback in a file, the other files still converted
            status = internal_error(exc, "cvt_port")
            results.append(FileResult(source, out, ExitStatus(status), seconds=time.perf_counter() - t0,
                                      message=f"{type(exc).__name__}: {first_line(exc, 120)} (traceback: see above)"))
            continue
        facts = json.loads((out / "conversion.json").read_text())
        results.append(FileResult(
            source, out, ExitStatus.PASS, variant=facts["variant"],
            max_abs_logit_diff=facts["parity"]["max_abs_logit_diff"],
            stock_gelu_max_abs_logit_diff=facts["parity"]["stock_gelu_max_abs_logit_diff"],
            seconds=time.perf_counter() - t0,
        ))
    return results


def summary_table(results: list[FileResult]) -> str:
    """A Markdown table, one row per file, and a last line with the count and the exit status."""
    rows = ["| file | variant | output | status | max abs logit diff | stock GELU drift | time s | error |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        fig = (lambda x: "-" if x is None else f"{x:.3g}")
        rows.append(f"| {r.source.name} | {r.variant or '-'} | {r.output if r.status == 0 else '-'} "
                    f"| {int(r.status)} {_STATUS_WORDS.get(r.status, r.status.name.lower())} "
                    f"| {fig(r.max_abs_logit_diff)} | {fig(r.stock_gelu_max_abs_logit_diff)} | {r.seconds:.1f} "
                    f"| {r.message.replace('|', '/') or '-'} |")
    done = sum(r.status == ExitStatus.PASS for r in results)
    rows.append(f"\n{done} of {len(results)} files converted; exit status {int(worst_status(results))} (the worst)")
    return "\n".join(rows)


__all__ = ["FileResult", "convert_many", "release_files", "summary_table", "worst_status"]
