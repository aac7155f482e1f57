"""The files of a pixel cache (:mod:`evaluate.pixels.cache` describes the format): their names, writing them
(decoding a range of images, then the small files and the manifest) and reading and checking the manifest.
Shared by the single-process build (:mod:`evaluate.pixels.cache`), the shared build (:mod:`evaluate.pixels.cache_parts`)
and the checker (:mod:`evaluate.pixels.cache_verify`)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cvt_port.errors import BadInput
from cvt_port.provenance import library_versions

from .cache_key import CACHE_FORMAT, describe_transform, difference, sha256_json
from .dataset import EvalDataset, collate
from ..sources.samples import DataSource

MANIFEST = "manifest.json"
REBUILD_HINT = ("rebuild it (`python -m evaluate cache build` or evaluate.api.build_cache) with this run's data, "
                "subset and preprocessing, or use another cache folder")


def refuse_existing(cache_dir: Path, samples, parts: dict, transforms, stamps, meanwhile: bool = False) -> None:
    """A :class:`BadInput` for a folder that exists and is not empty (nor a cache of this key). ``meanwhile``:
    found on the check before publishing (another build filled the folder while this one decoded)."""
    if cache_dir.exists() and not (cache_dir.is_dir() and not any(cache_dir.iterdir())):  # a non-empty folder
        what = ("another build published a cache of other images or settings there while this one decoded"
                if meanwhile else "the folder exists and is not a cache of these images and settings")
        raise BadInput(f"cache {cache_dir}: {what}{_why_not(cache_dir, samples, parts, transforms, stamps)}; "
                       "nothing was replaced: remove it, choose another folder, or rebuild with overwrite (the cache build option)")


def _why_not(cache_dir: Path, samples, parts: dict, transforms, stamps) -> str:
    try:
        manifest = json.loads((cache_dir / MANIFEST).read_text(encoding="utf-8"))
        _check_manifest(manifest)
        return f" (it was built with {difference(manifest, parts, transforms, cache_dir, samples, stamps)})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def stored_key(cache_dir: Path) -> str | None:
    try:
        return json.loads((cache_dir / MANIFEST).read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


# sha256 of the bytes each image was decoded from, uint8 (N, 32), zeros where none were read: a run from the cache
# records the same content hashes as a run that decodes (predictions.csv, evaluate.verdict.baseline)
CONTENT_FILE = "content-sha256.npy"
# images whose bytes are hashed again whenever the cache is opened, spread over the list: what a stat of every file
# cannot see (bytes rewritten with the size and modification time kept)
PROBES = 32


def probe_indices(n: int) -> np.ndarray:
    """:data:`PROBES` indices spread evenly over a list of ``n`` (the first and the last included)."""
    return np.unique(np.linspace(0, n - 1, min(PROBES, n)).astype(int)) if n else np.zeros(0, dtype=int)


def changed_content(samples, content: np.ndarray | None) -> str | None:
    """The id of the first probed image (:func:`probe_indices`) whose file's bytes no longer hash to the sha256 the
    cache recorded (``content``, :data:`CONTENT_FILE`), or None. Images without a file or a recorded hash, and files
    that cannot be read (their stamp already differs), are not probed."""
    if content is None:
        return None
    for i in probe_indices(len(samples)):
        ref, row = samples[i].ref, content[i]
        if not isinstance(ref, str) or not row.any():
            continue
        try:
            digest = hashlib.sha256(Path(ref).read_bytes()).digest()
        except OSError:
            continue
        if digest != row.tobytes():
            return samples[i].image_id
    return None


def pixels_file(mode: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in mode)
    return f"pixels-{safe}.npy"


def crc_file(mode: str) -> str:
    return "crc32-" + pixels_file(mode)[len("pixels-"):]


def crc32_rows(arr: np.ndarray) -> np.ndarray:
    """uint32 CRC-32 of each row (image) of a C-contiguous uint8 array."""
    arr = np.ascontiguousarray(arr)
    return np.fromiter((zlib.crc32(row) for row in arr.reshape(len(arr), -1)), dtype=np.uint32, count=len(arr))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def consecutive_runs(index) -> list[tuple[int, int]]:
    """``(i, j)`` slices of ``index`` whose values are consecutive: one read or write of the file each."""
    runs, i = [], 0
    while i < len(index):
        j = i + 1
        while j < len(index) and index[j] == index[j - 1] + 1:
            j += 1
        runs.append((i, j))
        i = j
    return runs


class _Descriptor:
    """The open file descriptor of a :class:`RowFile` or :class:`RowReader`: closed once, also when dropped."""

    fd: int | None = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.close()


class RowFile(_Descriptor):
    """A ``.npy`` file of ``shape`` uint8 rows, written in place (``rows_file[a:b] = rows``) with ``os.pwrite``.

    Why not a writable memmap: every page written through it stays in the writing process's resident set until the
    map is dropped, so building a cache of 50,000 images at 224 held 7 GiB (issue 26.1: memory per image must stay
    flat). Written with pwrite, the pages are the kernel's page cache, written back and reclaimed as it needs."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # the header, full size
        self.offset, self.shape = header.offset, header.shape
        del header
        self.row = int(np.prod(shape[1:], dtype=np.int64))
        self.fd = os.open(path, os.O_WRONLY)

    def __setitem__(self, at, rows) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        index = range(self.shape[0])[at] if isinstance(at, slice) else np.asarray(at).tolist()
        if len(index) != len(rows):
            raise ValueError(f"{len(rows)} rows for {len(index)} places")
        for i, j in consecutive_runs(index):
            view, at_byte = memoryview(rows[i:j]).cast("B"), self.offset + index[i] * self.row
            while len(view):
                done = os.pwrite(self.fd, view, at_byte)
                view, at_byte = view[done:], at_byte + done

    def flush(self) -> None:
        """Every row is written (pwrite returns once the kernel holds them): the file is closed."""
        self.close()


class RowReader(_Descriptor):
    """The rows of a ``.npy`` file of uint8 rows, read with ``os.pread`` into arrays the caller owns
    (``reader.take(indices)``); ``shape`` and ``dtype`` as the file's.

    Why not a read-only memmap: every page read through it stays in the reading process's resident set while the map
    is open, so a DataLoader worker of a cached pass over 50,000 images at 224 grew to 1.8 GiB at 20,000 images and
    half the cache at 50,000 (issue 26.1: memory per image must stay flat; a scheduler that accounts a job by its
    processes' RSS counts those pages). Read with pread, the pages are the kernel's page cache, shared and reclaimed
    as it needs, and each batch is copied once, as the memmap's rows were. The file is opened in each process that
    reads (pread has no file position, so a descriptor inherited over fork is safe too)."""

    def __init__(self, path: Path):
        header = np.load(path, mmap_mode="r")  # the header only: nothing of the rows is read
        self.path, self.offset, self.shape, self.dtype = Path(path), header.offset, header.shape, header.dtype
        del header
        self.row = int(np.prod(self.shape[1:], dtype=np.int64))

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (in that order) as a new array: one read per run of consecutive rows."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.uint8)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"{self.path}: rows {idx.min()}..{idx.max()} of {self.shape[0]}")
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        for i, j in consecutive_runs(idx):
            view, at = memoryview(out[i:j]).cast("B"), self.offset + int(idx[i]) * self.row
            while len(view):
                got = os.preadv(self.fd, [view], at)
                if got <= 0:
                    raise OSError(f"{self.path}: ends before row {int(idx[i])}")
                view, at = view[got:], at + got
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "fd": None}  # a descriptor is this process's: reopened where unpickled


def new_arrays(folder: Path, shapes: dict, n: int) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """The arrays of ``n`` cached images in ``folder``: per mode the pixels (a :class:`RowFile`) and their CRC-32s,
    the ok flags and the content hashes (sha256, 32 bytes each), all zero until decoded."""
    pixels = {mode: RowFile(folder / pixels_file(mode), (n, *shape)) for mode, shape in shapes.items()}
    crcs = {mode: np.zeros(n, dtype=np.uint32) for mode in pixels}
    return pixels, crcs, np.zeros(n, dtype=bool), np.zeros((n, 32), dtype=np.uint8)


def decode_range(out: Path, dataset: EvalDataset, start: int, stop: int, num_workers: int, batch_size: int,
                 skip_bad_images: bool, progress: bool, on_batch: Callable[[], None] | None = None):
    """Decode images ``start:stop`` into ``out/pixels-<mode>.npy`` and their content hashes into ``out/CONTENT_FILE``:
    (per-mode CRC-32s, ok flags, {index: message}) of those rows. ``on_batch`` is called after each batch (a
    builder's sign of life)."""
    n = stop - start
    pixels, crcs, ok, content = new_arrays(out, dataset.shapes, n)
    errors: dict[int, str] = {}
    part = dataset if (start, stop) == (0, len(dataset)) else torch.utils.data.Subset(dataset, range(start, stop))
    for batch in _batches(part, num_workers, batch_size, progress) if n else ():
        index = batch["index"].numpy()
        rows_at = index - start
        for mode, arr in pixels.items():
            rows = batch["pixels"][mode].numpy()
            arr[rows_at] = rows
            crcs[mode][rows_at] = crc32_rows(rows)
        ok[rows_at] = batch["ok"].numpy()
        for at, digest in zip(rows_at.tolist(), batch["sha256"]):
            if digest:
                content[at] = np.frombuffer(bytes.fromhex(digest), dtype=np.uint8)
        bad = index[~batch["ok"].numpy()]
        if len(bad) and not skip_bad_images:
            raise BadInput(f"{batch['errors'][0]}; use data.skip_bad_images to record bad images in the cache")
        errors.update(zip(bad.tolist(), batch["errors"]))
        if on_batch is not None:
            on_batch()
    for arr in pixels.values():
        arr.flush()
    del pixels
    np.save(out / CONTENT_FILE, content)
    return crcs, ok, errors


def finish(tmp: Path, dataset: EvalDataset, parts: dict, stamps: np.ndarray, transforms, source: DataSource,
           crcs: dict, ok: np.ndarray, errors: dict, selection: dict | None = None) -> None:
    """Write every file of a cache but the pixels (already in ``tmp``), the manifest last."""
    np.save(tmp / "labels.npy", np.asarray([s.label for s in dataset.samples], dtype=np.int64))
    np.save(tmp / "ok.npy", ok)
    (tmp / "errors.json").write_text(json.dumps({str(i): m for i, m in sorted(errors.items())}, indent=1) + "\n",
                                     encoding="utf-8")
    (tmp / "image_ids.txt").write_text("".join(s.image_id + "\n" for s in dataset.samples), encoding="utf-8")
    for mode, crc in crcs.items():
        np.save(tmp / crc_file(mode), crc)
    np.save(tmp / "sources.npy", stamps)
    manifest = _manifest(parts, dataset, transforms, source, bad=len(errors))
    if selection is not None:
        manifest["selection"] = selection
    manifest["sha256"] = {name: _sha256_file(tmp / name) for name in _small_files(manifest)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _batches(dataset, num_workers: int, batch_size: int, progress: bool):
    """The dataset in order, decoded by ``num_workers`` processes, with a progress bar."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate, prefetch_factor=4 if num_workers > 0 else None)
    with tqdm(total=len(dataset), desc="caching", unit="img", disable=not progress, file=sys.stderr) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["index"]))


def _manifest(parts: dict, dataset: EvalDataset, transforms, source: DataSource, bad: int) -> dict:
    return {
        "format": CACHE_FORMAT,
        "key": sha256_json(parts),
        "parts": parts,
        "count": len(dataset),
        "bad_images": bad,
        "data": str(source.root),
        "layout": source.layout,
        "modes": {mode: {"shape": list(shape), "file": pixels_file(mode), "crc32": crc_file(mode),
                         "description": describe_transform(transforms[mode])}
                  for mode, shape in dataset.shapes.items()},
        "files": {"labels": "labels.npy", "ok": "ok.npy", "errors": "errors.json", "image_ids": "image_ids.txt",
                  "sources": "sources.npy", "content": CONTENT_FILE},
        # informational, not part of the key: the versions that produced the pixels
        "versions": library_versions("numpy", "pillow", "torch", "transformers"),
    }


def _small_files(manifest: dict) -> list[str]:
    """Every file of a cache but the pixels, whose sha256 the manifest records."""
    return [*manifest["files"].values(), *(info["crc32"] for info in manifest["modes"].values())]


def read_manifest(cache_dir: Path) -> dict:
    path = cache_dir / MANIFEST
    if not path.is_file():
        what = "no such folder" if not cache_dir.exists() else f"no {MANIFEST}"
        raise BadInput(f"cache {cache_dir}: {what} (not a finished cache); build it with `python -m evaluate cache build`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        _check_manifest(manifest)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(f"cache {cache_dir}: {MANIFEST} is unreadable or corrupt ({type(exc).__name__}); "
                       f"{REBUILD_HINT}") from None
    return manifest


def _check_manifest(manifest) -> None:
    """Raise ValueError/KeyError/TypeError unless ``manifest`` has the fields a reader uses."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
        raise ValueError("not a cache manifest")
    int(manifest["count"])
    if manifest.get("format") != CACHE_FORMAT:
        return  # refused by the key comparison, which names the format
    if not isinstance(manifest["modes"], dict) or not manifest["modes"]:
        raise ValueError("no modes")
    for info in manifest["modes"].values():
        if len(info["shape"]) != 3 or not isinstance(info["file"], str) or not isinstance(info["crc32"], str):
            raise ValueError("bad mode entry")
    if not isinstance(manifest["sha256"], dict) or set(manifest["sha256"]) != set(_small_files(manifest)):
        raise ValueError("no checksums")


def damaged_files(cache_dir: Path, manifest: dict) -> list[str]:
    """The small files whose sha256 is not the one the manifest recorded (or that are missing)."""
    bad = []
    for name, digest in manifest["sha256"].items():
        try:
            if _sha256_file(cache_dir / name) != digest:
                bad.append(name)
        except OSError:
            bad.append(name)
    return bad
