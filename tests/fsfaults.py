"""A folder nothing can be written in, for the tests of "cannot write there" (both CLIs).

Permission bits do not stop root (the test machines run as root), so as root the folder is also made
immutable with ``chattr +i`` (ext4, xfs, btrfs); the precondition is checked, never assumed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only_folder(path: Path):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    immutable = (os.geteuid() == 0 and shutil.which("chattr") is not None
                 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0)
    try:
        try:
            (path / "probe").mkdir()
        except OSError:
            pass
        else:
            (path / "probe").rmdir()
            pytest.skip("cannot make a read-only folder on this machine (root without chattr +i)")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)
