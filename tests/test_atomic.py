"""cvt_port.atomic: a folder is replaced whole, with the umask's permissions, or not at all."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest

from cvt_port import atomic


def fill(folder: Path, tag: str, n: int = 4) -> None:
    for i in range(n):
        (folder / f"f{i}.txt").write_text(f"{tag}\n")


def tags(folder: Path) -> set[str]:
    return {p.read_text() for p in folder.iterdir()}


@pytest.fixture(params=["exchange", "two renames"])
def swap(request, monkeypatch):
    """Both ways of swapping: renameat2(RENAME_EXCHANGE) and the portable fallback."""
    if request.param == "two renames":
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    return request.param


def test_a_new_folder_replaces_the_old_one_whole(tmp_path, swap):
    target = tmp_path / "out"
    target.mkdir()
    fill(target, "old", n=6)
    with atomic.staged_dir(target) as tmp:
        fill(tmp, "new")
        assert tags(target) == {"old\n"}  # the previous folder is intact until the new one is complete
    assert tags(target) == {"new\n"} and len(list(target.iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folder left


def test_an_exception_leaves_the_previous_folder_untouched(tmp_path, swap):
    target = tmp_path / "out"
    target.mkdir()
    fill(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(target) as tmp:
            fill(tmp, "new")
            raise RuntimeError("crash while writing")
    assert tags(target) == {"old\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_usual_permissions_not_mkstemp_ones(tmp_path, swap):
    umask = os.umask(0o027)
    try:
        target = tmp_path / "out"
        with atomic.staged_dir(target) as tmp:
            fd, name = tempfile.mkstemp(dir=tmp)  # 0600, as mkstemp and safetensors write
            os.close(fd)
            os.chmod(tmp, 0o700)
    finally:
        os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o750
    assert (target / Path(name).name).stat().st_mode & 0o777 == 0o640


def test_concurrent_writers_leave_one_whole_folder(tmp_path, swap):
    target = tmp_path / "out"
    errors = []

    def writer(k: int) -> None:
        try:
            for j in range(15):
                with atomic.staged_dir(target) as tmp:
                    fill(tmp, f"w{k}-{j}", n=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(tags(target)) == 1 and len(list(target.iterdir())) == 5  # never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_linked_target_keeps_its_link(tmp_path, swap):
    real = tmp_path / "real"
    real.mkdir()
    fill(real, "old")
    link = tmp_path / "link"
    link.symlink_to(real)
    with atomic.staged_dir(link) as tmp:
        fill(tmp, "new")
    assert link.is_symlink() and tags(link) == {"new\n"} and tags(real) == {"new\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_replacing_a_link_with_a_folder_leaves_nothing_behind(tmp_path, swap):
    """The converter's way (publish_dir on the path as given): the link itself is replaced."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    tmp = atomic.new_sibling(link)
    fill(tmp, "new")
    atomic.publish_dir(tmp, link)
    assert not link.is_symlink() and tags(link) == {"new\n"} and real.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
