"""Expected failures, the exit-status contract both CLIs share, and the one-line message helpers.

Exit status is an interface that CI and schedulers read (``python -m cvt_port`` and
``python -m evaluate`` alike):

====  ==================================================================================
0     passed (conversion done and verified; gate passed)
1     a check failed (parity, a gate check, an upload)
2     bad input or usage: one line naming the file, key or flag, nothing written
3     not made: no check could be made, or none with enough images to fail
4     internal error: one line naming the error and where the full traceback was written
130   interrupted (SIGINT, Ctrl-C)
143   terminated (SIGTERM: SLURM time limit, preemption, ``scancel``)
====  ==================================================================================

Expected failures (:class:`BadInput`, :class:`ParityError`) carry their status; the CLIs print
their message without a traceback.
"""

from __future__ import annotations

import enum
import os
import sys
import tempfile
import traceback
from pathlib import Path


class ExitStatus(enum.IntEnum):
    PASS = 0
    FAIL = 1
    BAD_INPUT = 2
    NOT_MADE = 3
    INTERNAL_ERROR = 4
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


EXIT_STATUS_HELP = (
    "Exit status: 0 pass, 1 a check failed, 2 bad input or usage, 3 not made (no check could be made), "
    "4 internal error (traceback written to a file), 130 interrupted (SIGINT), 143 terminated (SIGTERM)."
)


class BadInput(Exception):
    """The user's input cannot be used (exit status 2). Nothing has been written."""

    exit_code = ExitStatus.BAD_INPUT


class ParityError(Exception):
    """The converted model does not compute what the original computed (exit status 1)."""

    exit_code = ExitStatus.FAIL


def first_line(exc: BaseException | str, limit: int = 300, *, typed: bool = False) -> str:
    """The first non-empty line of an exception's message (or of a text), at most ``limit`` characters;
    the exception's class name when it has no message. Third-party errors are often pages long: a
    one-line error keeps the line that says what went wrong. ``typed``: ``"TypeName: line"`` (the
    class says as much as the text when a library's message is terse: ``OSError: [Errno 2] ...``)."""
    text = exc if isinstance(exc, str) else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    name = "" if isinstance(exc, str) else type(exc).__name__
    if not lines:
        return name
    return f"{name}: {lines[0][:limit]}" if typed and name else lines[0][:limit]


def internal_error(exc: BaseException, program: str) -> int:
    """Exit status 4 for an unexpected exception: the full traceback goes to a file (never to the
    screen, never mistaken for a verdict) and one line names the error and the file."""
    fd, path = tempfile.mkstemp(prefix=f"{program.replace(' ', '-')}-traceback-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=fh)
    print(f"internal error: {type(exc).__name__}: {first_line(exc, 200)} (full traceback in {Path(path)}; "
          f"please report it)", file=sys.stderr)
    return ExitStatus.INTERNAL_ERROR
