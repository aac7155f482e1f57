"""One cache built by every process of a launch (srun, torchrun), each decoding its share of the images.

Why: decoding is the whole cost of a build, and under a launcher N processes are there to share it. No
process group is needed (a build runs before any model or Trainer exists): the protocol is files in a
staging folder beside the cache, ``.<name>.build-<key prefix>/``:

- process ``r`` of ``W`` decodes the contiguous share ``r*N//W : (r+1)*N//W`` into a private folder and
  renames it to ``part-<r>-of-<W>`` when complete (the rename is the done marker: a part is there whole or
  not at all); after every batch it touches ``alive-<r>-of-<W>`` (its sign of life);
- every process, its own part done, waits until all ``W`` parts are there; the first to take the lock
  beside the cache (:func:`cvt_port.atomic.locked`) assembles them into the cache files, the very bytes a
  single process writes (:func:`evaluate.pixels.cache.finish`), publishes the cache atomically
  (:func:`cvt_port.atomic.staged_dir`) and removes the staging folder; the others find it published.
  An assembler that dies lets go of the lock (the kernel releases it) and the next one assembles.

Faults. A process whose share fails (a bad image, an error) writes ``failed-<r>-of-<W>.json`` with its
launch id, status and line before it exits; the others end at once with the same line and status
(2 for bad input, 4 otherwise). A process that dies without a word (killed, out of memory, a node lost)
leaves its part missing and its sign of life still: the others wait while a missing part's builder shows
life, and give up after :data:`PART_WAIT_S` seconds without any, with one line naming the missing parts,
their ranks and what to do, exit status 2: nothing in this process went wrong (no traceback to keep, so
not 4); the build cannot be finished from what the launch gave, like an input that cannot be used, and
nothing is published. The dead process's own status tells the cause.

Two launches on one cache folder. With the same key they share the staging folder: whichever publishes
first removes it, and a process of the other launch still decoding into it then finds the published cache
and uses it. With another key, the folder was checked before decoding, and is checked again under the lock
before publishing: a cache another launch published meanwhile is refused (exit status 2), never replaced,
unless ``overwrite``; this launch's finished parts stay for a rerun.

Reruns. The staging folder is named by the cache key (images, labels, source stamps, preprocessing), so
finished parts of an earlier launch are the very bytes this launch would decode: they are reused (a
rerun after a crash decodes only the missing shares). A failure marker counts only for the launch that
wrote it (:func:`evaluate.runtime.allocation.launch_id`, and written since this process started, as torchrun's
default run id repeats); a sign of life counts only when it changes while one waits.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from cvt_port.atomic import locked, new_sibling, staged_dir
from cvt_port.errors import BadInput, first_line

from ..runtime.allocation import process_start_time
from .cache_files import (CONTENT_FILE, crc_file, decode_range, finish, new_arrays, pixels_file, refuse_existing,
                          stored_key)
from .cache_key import sha256_json

PART_WAIT_S = 600.0  # seconds without a sign of life from a missing part's builder before the others give up
POLL_S = 0.2
LAUNCH_SKEW_S = 300  # the processes of one launch start within this many seconds of each other
COPY_ROWS = 256


def staging_dir(cache_dir: Path, key: str) -> Path:
    return cache_dir.parent / f".{cache_dir.name}.build-{key[:16]}"


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous rows of process ``rank`` of ``world`` (sizes differ by at most one)."""
    return rank * n // world, (rank + 1) * n // world


def part_name(rank: int, world: int) -> str:
    return f"part-{rank}-of-{world}"


def build_shared(cache_dir: Path, dataset, parts: dict, stamps, transforms, source, rank: int, world: int,
                 launch: str, num_workers: int, batch_size: int, skip_bad_images: bool, progress: bool,
                 overwrite: bool, selection: dict | None = None) -> Path:
    """This process's share of the cache at ``cache_dir``, then the cache once every share is done."""
    cache_dir = Path(os.path.realpath(cache_dir))
    key = sha256_json(parts)
    if stored_key(cache_dir) == key:
        return cache_dir
    if not overwrite:  # found by every process alike, before any decoding
        refuse_existing(cache_dir, dataset.samples, parts, transforms, stamps)
    staging = staging_dir(cache_dir, key)
    staging.mkdir(parents=True, exist_ok=True)
    if not (staging / part_name(rank, world)).is_dir():
        failed = staging / f"failed-{rank}-of-{world}.json"
        failed.unlink(missing_ok=True)  # an earlier launch's
        try:
            _make_part(staging, dataset, rank, world, num_workers, batch_size, skip_bad_images,
                       progress and rank == 0)  # one progress bar per launch
        except Exception as exc:
            if stored_key(cache_dir) == key:  # another launch of this key published it and removed the staging
                shutil.rmtree(staging, ignore_errors=True)  # folder under this part: its cache is this one
                return cache_dir
            status = 2 if isinstance(exc, BadInput) else 4
            _write_atomic(failed, json.dumps({"launch": launch, "status": status, "rank": rank,
                                              "message": str(exc) if status == 2 else first_line(exc, typed=True)}))
            raise
    return _assemble_when_complete(cache_dir, staging, key, dataset, parts, stamps, transforms, source, world, launch,
                                   selection, overwrite)


def _make_part(staging: Path, dataset, rank: int, world: int, num_workers, batch_size, skip_bad_images,
               progress) -> None:
    target = staging / part_name(rank, world)
    alive = staging / f"alive-{rank}-of-{world}"
    alive.touch()
    start, stop = share(len(dataset), rank, world)
    tmp = new_sibling(target)
    try:
        crcs, ok, errors = decode_range(tmp, dataset, start, stop, num_workers, batch_size, skip_bad_images,
                                        progress, on_batch=alive.touch)
        for mode, crc in crcs.items():
            np.save(tmp / crc_file(mode), crc)
        np.save(tmp / "ok.npy", ok)
        (tmp / "errors.json").write_text(json.dumps({str(i): m for i, m in errors.items()}), encoding="utf-8")
        try:
            os.rename(tmp, target)  # the done marker: the part appears whole
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another launch of the same key finished it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _assemble_when_complete(cache_dir: Path, staging: Path, key: str, dataset, parts, stamps, transforms, source,
                            world: int, launch: str, selection: dict | None, overwrite: bool = False) -> Path:
    seen: dict[int, float] = {}
    quiet_since = time.monotonic()
    while True:
        if stored_key(cache_dir) == key:
            shutil.rmtree(staging, ignore_errors=True)
            return cache_dir
        missing = [r for r in range(world) if not (staging / part_name(r, world)).is_dir()]
        if not missing:
            with locked(cache_dir):
                if stored_key(cache_dir) != key:
                    if not overwrite:  # checked again: another launch may have published here since the first check
                        refuse_existing(cache_dir, dataset.samples, parts, transforms, stamps, meanwhile=True)
                    _assemble(cache_dir, staging, dataset, parts, stamps, transforms, source, world, selection)
            continue
        _raise_failure(staging, missing, world, launch)
        for r in missing:
            try:
                mtime = (staging / f"alive-{r}-of-{world}").stat().st_mtime
            except OSError:
                continue
            if seen.get(r, mtime) != mtime:
                quiet_since = time.monotonic()
            seen[r] = mtime
        if time.monotonic() - quiet_since > PART_WAIT_S:
            names = ", ".join(part_name(r, world) for r in missing)
            raise BadInput(f"cache {cache_dir}: {names} (rank(s) {', '.join(map(str, missing))}) not finished and "
                           f"no sign of life for {PART_WAIT_S:.0f} s in {staging}: that process ended or hangs; "
                           "see its output, then rerun the build (finished parts are reused)")
        time.sleep(POLL_S)


def _raise_failure(staging: Path, missing: list[int], world: int, launch: str) -> None:
    """End as a process of this launch that failed its share ended: same line, same status."""
    since = process_start_time() - LAUNCH_SKEW_S
    for r in missing:
        path = staging / f"failed-{r}-of-{world}.json"
        try:
            if path.stat().st_mtime < since:
                continue
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("launch") == launch:
            if record.get("status") == 2:
                raise BadInput(record["message"])
            raise RuntimeError(f"rank {r} failed building its part of the cache: {record.get('message')}")


def _assemble(cache_dir: Path, staging: Path, dataset, parts, stamps, transforms, source, world: int,
              selection: dict | None) -> None:
    """The parts, in rank order, as one cache published at ``cache_dir``; the staging folder removed."""
    n = len(dataset)
    with staged_dir(cache_dir) as tmp:
        outs, crcs, ok, content = new_arrays(tmp, dataset.shapes, n)
        errors: dict[int, str] = {}
        for r in range(world):
            start, stop = share(n, r, world)
            part = staging / part_name(r, world)
            try:
                for mode, out in outs.items():
                    crcs[mode][start:stop] = np.load(part / crc_file(mode))
                    if stop > start:
                        rows = np.load(part / pixels_file(mode), mmap_mode="r")
                        if rows.shape != (stop - start, *out.shape[1:]):
                            raise ValueError(f"{rows.shape}")
                        for i in range(0, stop - start, COPY_ROWS):
                            out[start + i:min(stop, start + i + COPY_ROWS)] = rows[i:i + COPY_ROWS]
                ok[start:stop] = np.load(part / "ok.npy")
                content[start:stop] = np.load(part / CONTENT_FILE)  # the content hashes of the bytes decoded
                errors.update({int(i): m for i, m in json.loads((part / "errors.json").read_text("utf-8")).items()})
            except (OSError, ValueError) as exc:
                shutil.rmtree(part, ignore_errors=True)  # rebuilt by the next launch
                raise BadInput(f"cache {cache_dir}: {part} is unreadable ({first_line(exc, typed=True)}); it was "
                               "removed: rerun the build") from None
        for out in outs.values():
            out.flush()
        del outs
        np.save(tmp / CONTENT_FILE, content)
        finish(tmp, dataset, parts, stamps, transforms, source, crcs, ok, errors, selection)
    shutil.rmtree(staging, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
