"""Is there somewhere to write? Asked before any work is done, so a read-only or mistyped output path
costs a one-line error at once, not a finished conversion or evaluation pass that cannot be saved."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import BadInput

# What writing can meet that is the user's environment, not a bug: a read-only folder or file system,
# a full disk or quota, a path through a file.
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                errno.ENAMETOOLONG, errno.ELOOP}


def cannot_write(folder: Path, exc: OSError, label: str = "") -> BadInput:
    """The one line for an OSError met while writing ``folder``."""
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
    return BadInput(f"{label}{folder}: cannot write there: {exc.strerror or type(exc).__name__}{where}; "
                    "choose a writable folder")


def check_output_folder(folder: str | Path, label: str = "") -> Path:
    """``folder`` can be created (or replaced) and written: it is a folder or does not exist yet, and the
    nearest existing folder above it accepts a new entry (both writers build the new folder beside the old
    one and rename it into place, so the folder's own contents never need writing; nor is it looked into,
    which a concurrent run may be replacing). Tried with a real (removed) temporary folder rather than
    ``os.access``, which a read-only file system or an immutable folder fools when running as root.
    ``label`` names the folder's setting in the message (``"report.output "``, a flag of a CLI)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"{label}{folder}: exists and is not a folder; choose another path")
    ancestor = folder.parent.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInput(f"{label}{folder}: {ancestor} is not a folder; choose another path")
    try:
        # named like our temporary folders (".<name>.tmp-"), which evaluate.reports.report.check_output knows as ours
        os.rmdir(tempfile.mkdtemp(prefix=".cvt-port-write-test.tmp-", dir=ancestor))
    except OSError as exc:
        raise BadInput(f"{label}{folder}: cannot write in {ancestor}: {exc.strerror or type(exc).__name__}; "
                       "choose a writable folder") from None
    return folder
