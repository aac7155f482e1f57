"""Replace a folder as a whole, with the usual permissions: the one place that does it.

Why: a converted model, a pixel cache and a set of reports are each only meaningful complete.
Each is written into a fresh folder beside its target (same file system, so the final step is
a rename) and swapped into place at the end, so a reader sees the previous folder or the new
one, never a half-written or mixed one, and an interrupted writer leaves the previous folder
untouched. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` call (atomic: the target
never disappears); elsewhere, or on a file system without it, two renames.

Permissions: ``tempfile.mkdtemp`` makes folders 0700 and some writers (safetensors,
``mkstemp``) make files 0600; a finished folder gets what any new file would get under the
user's umask (0755/0644 with the usual 022), so results on a shared cluster disk are readable
by the group like everything else there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def usual_permissions(folder: Path) -> None:
    """``folder`` and the plain files directly in it get the umask's usual modes."""
    umask = _umask()
    folder = Path(folder)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file() and not f.is_symlink():
            f.chmod(0o666 & ~umask)


def new_sibling(target: Path, kind: str = "tmp") -> Path:
    """A new, empty, hidden folder beside ``target`` (created with the umask's permissions)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (Linux renameat2); False where that is not available."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target``; a previous ``target`` is removed only once the
    new one is in place. Concurrent writers of one target: the last to finish wins, whole."""
    tmp, target = Path(tmp), Path(target)
    for _ in range(20):  # retries only while another writer swaps the same target concurrently
        if os.path.lexists(target):
            try:
                if _exchange(tmp, target):
                    _remove(tmp)  # tmp now holds the previous folder (or link)
                    return
            except FileNotFoundError:
                continue  # the target vanished meanwhile (another writer's fallback): try again
            old = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                os.rename(target, old)
            except FileNotFoundError:
                continue
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    os.rename(old, target)  # put the previous one back: nothing lost
                    raise
                _remove(old)
                continue
            _remove(old)
            return
        try:
            os.rename(tmp, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(errno.EBUSY, "other writers keep replacing the folder", str(target))


def _remove(path: Path) -> None:
    """Remove what a replaced target was: a folder, or a link or file in its place."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def publish_dir(tmp: Path, target: Path) -> None:
    """The finished ``tmp`` gets the usual permissions, then replaces ``target`` (:func:`replace_dir`)."""
    usual_permissions(tmp)
    replace_dir(tmp, target)


@contextmanager
def staged_dir(target: Path, kind: str = "tmp") -> Iterator[Path]:
    """``with staged_dir(target) as tmp:`` fill ``tmp``; on a normal exit it replaces ``target``
    (:func:`publish_dir`), on any exception (or interrupt) it is removed and ``target`` is untouched.
    A ``target`` that is a link is followed: the folder it leads to is replaced, the link stays."""
    target = Path(os.path.realpath(target))
    tmp = new_sibling(target, kind)
    try:
        yield tmp
        publish_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def locked(target: Path) -> Iterator[Path]:
    """``with locked(target):`` hold an exclusive lock that every process using this helper on the same
    ``target`` waits for: one writer of a shared path at a time, the others wait and then see its result.

    The lock is a POSIX record lock (``fcntl.lockf``) on a hidden file beside ``target`` (``.<name>.lock``),
    removed by its holder before it lets go; a waiter that then holds a removed file's lock retries on the
    path's current file, so no file is left behind and two processes never both hold the lock. POSIX locks
    work across nodes on NFS and on Lustre mounted with ``flock``; the kernel releases the lock when its
    holder dies, so a crashed writer never blocks the others (it may leave the empty lock file). Where
    ``fcntl`` is missing (Windows) no lock is taken. Yields the lock file's path."""
    target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield lock
        return
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            held, now = os.fstat(fd), os.stat(lock)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                break  # the path's current lock file: ours
        except FileNotFoundError:
            pass  # its holder removed it as we got it: try the path's new file
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield lock
    finally:
        try:
            os.unlink(lock)  # still holding the lock: a waiter on this file will see it gone and retry
        except FileNotFoundError:
            pass
        os.close(fd)  # releases the lock


__all__ = ["locked", "new_sibling", "publish_dir", "replace_dir", "staged_dir", "usual_permissions"]
