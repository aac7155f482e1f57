"""A preprocessed-pixel cache: decode and resize an evaluation set once, read raw bytes afterwards.

Why: an evaluation spends most of its CPU time decoding JPEGs and resizing them. Repeating a
run on the same images with the same preprocessing (another checkpoint, another precision,
another device count) need not redo that work: :func:`build_cache` runs the ordinary
:class:`~evaluate.dataset.EvalDataset` once and stores its uint8 output; :func:`open_cache`
returns a :class:`CachedDataset` whose items are bit-identical to the ones the JPEG path would
give, read from memory-mapped files (a batch is one slice of a file, no decoding at all).

Layout of a cache folder (format version :data:`CACHE_FORMAT`)::

    manifest.json         format, key, the parts of the key, N, per-mode shape and description,
                          library versions (informational), the files below
    pixels-<mode>.npy     uint8 (N, 3, H, W) per preprocessing mode: one memory-mappable file per
                          mode, not split into shards (memory mapping already reads only the
                          batches asked for, and one file keeps a batch one contiguous slice)
    labels.npy            int64 (N,)
    ok.npy                bool (N,): False for an image that could not be decoded (zero pixels)
    errors.json           {index: message} for the images that are not ok
    image_ids.txt         the ordered image ids, one per line (its sha256 is ``samples_sha256``)
    crc32-<mode>.npy      uint32 (N,): CRC-32 of each image's cached pixels, checked on every read
    sources.npy           int64 (N, 2): size and modification time (ns) of each source file when
                          it was cached (-1 for dataset rows and files that could not be read)

The key (:func:`cache_key`) is a sha256 over the ordered image ids, the labels, the source
files' sizes and modification times (and those of a ``datasets`` source's Arrow files), each
mode's preprocessing description and the format version. A cache is opened only for the very
same key; anything else is a one-line :class:`~cvt_port.errors.BadInput` saying which part
differs: an image replaced under the same name is not served from the cache.

Wrong pixels are never served silently. The small files carry sha256 sums in the manifest,
checked when the cache is opened; every image's pixels carry a CRC-32, checked as it is read
(CRC-32 because it is the fastest check in the standard library, about 1.5 GB/s, and damage
to stored bytes is what it is for; it is not a defence against tampering). A damaged image is
reported like an unreadable one, by its id. :func:`verify_cache` (``python -m evaluate cache
verify --cache-dir DIR``) checks a whole cache.

A cache is written into a temporary folder beside the target and swapped into place at the
end (:mod:`cvt_port.atomic`), so an interrupted build never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from cvt_port.atomic import locked, staged_dir
from cvt_port.errors import BadInput
from cvt_port.provenance import library_versions

from .cache_key import (  # noqa: F401  (cache_key, CACHE_FORMAT: re-exported)
    CACHE_FORMAT, cache_key, describe_transform, difference, key_parts, sha256_json, source_stamps)
from .dataset import EvalDataset, collate
from .layouts import DataSource, Sample

MANIFEST = "manifest.json"
REBUILD_HINT = ("rebuild it (`python -m evaluate cache build` or evaluate.api.build_cache) with this run's data, "
                "subset and preprocessing, or use another cache folder")


# --------------------------------------------------------------------------- building


def build_cache(
    cache_dir: str | Path,
    source: DataSource,
    samples: Sequence[Sample],
    transforms: Mapping[str, Callable],
    num_workers: int = min(4, os.cpu_count() or 1),
    skip_bad_images: bool = False,
    progress: bool = True,
    batch_size: int = 64,
    overwrite: bool = False,
) -> Path:
    """Decode and preprocess ``samples`` once into ``cache_dir``; returns ``cache_dir``.

    A folder that already holds a cache with the same key is returned as it is (nothing to
    do); any other existing folder is a :class:`BadInput` unless ``overwrite``. Without
    ``skip_bad_images`` an unreadable image fails the build, as it fails a run; with it, the
    image is stored as ``ok=False`` with its message and zero pixels.
    """
    cache_dir = Path(cache_dir)
    samples = list(samples)
    if not samples:
        raise BadInput(f"cache {cache_dir}: no images to cache")
    stamps = source_stamps(samples)  # before decoding: a file changed meanwhile makes the cache stale, not wrong
    parts = key_parts(samples, transforms, source, stamps)
    with locked(cache_dir):  # several builders (srun tasks) of one folder: the first builds, the others reuse it
        return _build_locked(cache_dir, source, samples, transforms, parts, stamps, num_workers, skip_bad_images,
                             progress, batch_size, overwrite)


def _build_locked(cache_dir, source, samples, transforms, parts, stamps, num_workers, skip_bad_images, progress,
                  batch_size, overwrite) -> Path:
    if cache_dir.exists() and not overwrite and not _is_empty_dir(cache_dir):
        if _stored_key(cache_dir) == sha256_json(parts):
            return cache_dir
        raise BadInput(f"cache {cache_dir}: the folder exists and is not a cache of these images and settings"
                       f"{_why_not(cache_dir, samples, parts, transforms, stamps)}; "
                       "remove it, choose another folder, or overwrite it")
    # beside the target (same file system), swapped into place only when complete
    with staged_dir(cache_dir) as tmp:
        dataset = EvalDataset(source, samples, transforms)
        _write(tmp, dataset, parts, stamps, transforms, num_workers, batch_size, skip_bad_images, progress, source)
    return cache_dir


def _why_not(cache_dir: Path, samples, parts: dict, transforms, stamps) -> str:
    try:
        manifest = json.loads((cache_dir / MANIFEST).read_text(encoding="utf-8"))
        _check_manifest(manifest)
        return f" (it was built with {difference(manifest, parts, transforms, cache_dir, samples, stamps)})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _stored_key(cache_dir: Path) -> str | None:
    try:
        return json.loads((cache_dir / MANIFEST).read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _pixels_file(mode: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in mode)
    return f"pixels-{safe}.npy"


def _crc_file(mode: str) -> str:
    return "crc32-" + _pixels_file(mode)[len("pixels-"):]


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


def _write(tmp: Path, dataset: EvalDataset, parts: dict, stamps: np.ndarray, transforms, num_workers: int,
           batch_size: int, skip_bad_images: bool, progress: bool, source: DataSource) -> None:
    """Fill ``tmp`` with every file of a cache; the manifest is written last."""
    n = len(dataset)
    pixels = {mode: np.lib.format.open_memmap(tmp / _pixels_file(mode), mode="w+", dtype=np.uint8,
                                              shape=(n, *shape))
              for mode, shape in dataset.shapes.items()}
    crcs = {mode: np.zeros(n, dtype=np.uint32) for mode in pixels}
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    for batch in _batches(dataset, num_workers, batch_size, progress):
        index = batch["index"].numpy()
        for mode, arr in pixels.items():
            rows = batch["pixels"][mode].numpy()
            arr[index] = rows
            crcs[mode][index] = crc32_rows(rows)
        ok[index] = batch["ok"].numpy()
        bad = index[~batch["ok"].numpy()]
        if len(bad) and not skip_bad_images:
            raise BadInput(f"{batch['errors'][0]}; use data.skip_bad_images to record bad images in the cache")
        errors.update(zip(bad.tolist(), batch["errors"]))
    for arr in pixels.values():
        arr.flush()
    del pixels
    np.save(tmp / "labels.npy", np.asarray([s.label for s in dataset.samples], dtype=np.int64))
    np.save(tmp / "ok.npy", ok)
    (tmp / "errors.json").write_text(json.dumps({str(i): m for i, m in sorted(errors.items())}, indent=1) + "\n",
                                     encoding="utf-8")
    (tmp / "image_ids.txt").write_text("".join(s.image_id + "\n" for s in dataset.samples), encoding="utf-8")
    for mode, crc in crcs.items():
        np.save(tmp / _crc_file(mode), crc)
    np.save(tmp / "sources.npy", stamps)
    manifest = _manifest(parts, dataset, transforms, source, bad=len(errors))
    manifest["sha256"] = {name: _sha256_file(tmp / name) for name in _small_files(manifest)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _batches(dataset: EvalDataset, num_workers: int, batch_size: int, progress: bool):
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
        "modes": {mode: {"shape": list(shape), "file": _pixels_file(mode), "crc32": _crc_file(mode),
                         "description": describe_transform(transforms[mode])}
                  for mode, shape in dataset.shapes.items()},
        "files": {"labels": "labels.npy", "ok": "ok.npy", "errors": "errors.json", "image_ids": "image_ids.txt",
                  "sources": "sources.npy"},
        # informational, not part of the key: the versions that produced the pixels
        "versions": library_versions("numpy", "pillow", "torch", "transformers"),
    }


def _small_files(manifest: dict) -> list[str]:
    """Every file of a cache but the pixels, whose sha256 the manifest records."""
    return [*manifest["files"].values(), *(info["crc32"] for info in manifest["modes"].values())]


# --------------------------------------------------------------------------- reading


def open_cache(cache_dir: str | Path, samples: Sequence[Sample], transforms: Mapping[str, Callable],
               source: DataSource | None = None, verify: bool = True) -> "CachedDataset":
    """The cache at ``cache_dir`` as a dataset, only if it was built for exactly these samples, source
    files and transforms (same key); otherwise a one-line :class:`BadInput` naming what differs.
    ``source`` is needed for dataset rows. ``verify=False`` skips the per-image CRC check (for
    measuring its cost only)."""
    cache_dir = Path(cache_dir)
    manifest = _read_manifest(cache_dir)
    stamps = source_stamps(samples)
    expected = key_parts(samples, transforms, source, stamps)
    if manifest.get("key") != sha256_json(expected):
        why = difference(manifest, expected, transforms, cache_dir, samples, stamps)
        raise BadInput(f"cache {cache_dir} was built with {why}; {REBUILD_HINT}")
    return CachedDataset(cache_dir, manifest, verify=verify)


def _read_manifest(cache_dir: Path) -> dict:
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


def _damaged_files(cache_dir: Path, manifest: dict) -> list[str]:
    """The small files whose sha256 is not the one the manifest recorded (or that are missing)."""
    bad = []
    for name, digest in manifest["sha256"].items():
        try:
            if _sha256_file(cache_dir / name) != digest:
                bad.append(name)
        except OSError:
            bad.append(name)
    return bad


def _damage_message(image_id: str, cache_dir: Path, file: str) -> str:
    return (f"{image_id}: cached pixels damaged (CRC-32 mismatch in {cache_dir / file}); "
            "check the cache (`python -m evaluate cache verify` or evaluate.cache.verify_cache) and rebuild it")


class CachedBatch(list):
    """A list of items (what ``__getitems__`` must return) that also carries the batch already
    stacked: :meth:`CachedDataset.collate` returns that directly, any other collate function
    still sees an ordinary list of items."""

    def __init__(self, items: list[dict], collated: dict):
        super().__init__(items)
        self.collated = collated


class CachedDataset(torch.utils.data.Dataset):
    """Items as :class:`~evaluate.dataset.EvalDataset` gives them, read from a cache folder.

    The pixel files are memory-mapped lazily, once per process (the memmaps are not pickled,
    so DataLoader workers open their own). ``__getitems__`` (used by DataLoader for a whole
    batch) reads a batch with one slice per mode when the indices are consecutive, one fancy
    index otherwise; use :meth:`collate` (the data module picks it up) to skip re-stacking.
    Every image read is checked against its CRC-32: a mismatch makes it a bad image (``ok``
    False, zero pixels, a message naming it), which fails the run unless bad images are skipped.
    """

    def __init__(self, cache_dir: str | Path, manifest: dict, verify: bool = True):
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest
        self.verify = verify
        self.shapes = {mode: tuple(info["shape"]) for mode, info in manifest["modes"].items()}
        damaged = _damaged_files(self.cache_dir, manifest)
        if damaged:
            raise BadInput(f"cache {self.cache_dir}: {', '.join(damaged)} damaged or missing (sha256 differs from "
                           f"{MANIFEST}); {REBUILD_HINT}")
        try:
            self.labels = np.load(self.cache_dir / "labels.npy")
            self.ok = np.load(self.cache_dir / "ok.npy")
            self.errors = {int(i): m for i, m in json.loads((self.cache_dir / "errors.json").read_text("utf-8")).items()}
            self.image_ids = (self.cache_dir / "image_ids.txt").read_text("utf-8").splitlines()
            self.crcs = {mode: np.load(self.cache_dir / info["crc32"]) for mode, info in manifest["modes"].items()}
            arrays = self._open()
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"cache {self.cache_dir}: a file is missing or corrupt ({type(exc).__name__}); "
                           f"{REBUILD_HINT}") from None
        n = int(manifest["count"])
        if len(self.labels) != n or len(self.ok) != n or len(self.image_ids) != n or any(
                arr.shape != (n, *self.shapes[m]) or arr.dtype != np.uint8 or self.crcs[m].shape != (n,)
                for m, arr in arrays.items()):
            raise BadInput(f"cache {self.cache_dir}: its files do not match {MANIFEST}; {REBUILD_HINT}")

    def _open(self) -> dict[str, np.ndarray]:
        arrays = getattr(self, "_arrays", None)
        if arrays is None:
            arrays = {mode: np.load(self.cache_dir / info["file"], mmap_mode="r")
                      for mode, info in self.manifest["modes"].items()}
            self._arrays = arrays
        return arrays

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # memmaps are reopened in each process
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a cache of {len(self)} images")
        return self.__getitems__([i % len(self)])[0]

    def __getitems__(self, indices: Sequence[int]) -> CachedBatch:
        idx = np.asarray(indices, dtype=np.int64)
        rows = {mode: _take(arr, idx) for mode, arr in self._open().items()}
        ok = self.ok[idx].copy()
        errors = {int(i): self.errors[int(i)] for i, good in zip(idx, ok) if not good}
        if self.verify:
            for mode, arr in rows.items():
                for j in np.flatnonzero(crc32_rows(arr) != self.crcs[mode][idx]):
                    i = int(idx[j])
                    if ok[j]:
                        errors[i] = _damage_message(self.image_ids[i], self.cache_dir, self.manifest["modes"][mode]["file"])
                    ok[j] = False
            for mode, arr in rows.items():
                arr[~ok] = 0  # a damaged image carries zero pixels, like an unreadable one
        pixels = {mode: torch.from_numpy(arr) for mode, arr in rows.items()}
        labels = self.labels[idx]
        collated = {
            "index": torch.from_numpy(idx.copy()),
            "label": torch.from_numpy(labels.astype(np.int64)),
            "ok": torch.from_numpy(ok),
            "pixels": pixels,
            "errors": [errors[int(i)] for i, good in zip(idx, ok) if not good],
        }
        items = [self._item(int(i), int(labels[j]), bool(ok[j]), {m: p[j] for m, p in pixels.items()}, errors)
                 for j, i in enumerate(idx)]
        return CachedBatch(items, collated)

    @staticmethod
    def _item(index: int, label: int, ok: bool, pixels: dict, errors: dict) -> dict:
        item = {"index": index, "label": label, "ok": ok, "pixels": pixels}
        if not ok:
            item["error"] = errors[index]
        return item

    @staticmethod
    def collate(batch: list[dict]) -> dict:
        """The stacked batch ``__getitems__`` already made; stacks other lists as ``evaluate.dataset.collate``."""
        return batch.collated if isinstance(batch, CachedBatch) else collate(batch)


def _take(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a memmap as an owned, writable array: one slice when consecutive."""
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and (len(idx) == 1 or bool((np.diff(idx) == 1).all())):
        return np.array(arr[idx[0]: idx[-1] + 1])
    return np.asarray(arr[idx])


# --------------------------------------------------------------------------- verifying


@dataclass
class CacheReport:
    """What :func:`verify_cache` found: ``damaged`` lists (image id, pixel file) per image whose
    pixels fail their CRC-32; ``damaged_files`` the small files whose sha256 differs."""

    cache_dir: Path
    count: int
    modes: list[str]
    damaged: list[tuple[str, str]] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.damaged and not self.damaged_files

    def lines(self, limit: int = 20) -> list[str]:
        """One line per finding (at most ``limit`` images), then a summary line."""
        out = [f"damaged file: {self.cache_dir / name} (sha256 differs from {MANIFEST})" for name in self.damaged_files]
        out += [f"damaged: {image_id} in {file}" for image_id, file in self.damaged[:limit]]
        if len(self.damaged) > limit:
            out.append(f"... and {len(self.damaged) - limit} more damaged image(s)")
        state = "intact" if self.intact else (f"DAMAGED: {len(self.damaged)} image(s), {len(self.damaged_files)} "
                                              f"other file(s); {REBUILD_HINT}")
        out.append(f"cache {self.cache_dir}: {self.count} images, modes {', '.join(self.modes)}: {state}")
        return out


def verify_cache(cache_dir: str | Path, chunk: int = 256) -> CacheReport:
    """Check every file of the cache at ``cache_dir`` against its recorded checksums.

    Not a cache (no or an unreadable manifest, another format): :class:`BadInput`. A pixel file
    that cannot be read at all counts every image of it as damaged."""
    cache_dir = Path(cache_dir)
    manifest = _read_manifest(cache_dir)
    if manifest.get("format") != CACHE_FORMAT:
        raise BadInput(f"cache {cache_dir}: cache format {manifest.get('format')} (this version reads format "
                       f"{CACHE_FORMAT}); {REBUILD_HINT}")
    n = int(manifest["count"])
    report = CacheReport(cache_dir, n, sorted(manifest["modes"]), damaged_files=_damaged_files(cache_dir, manifest))
    try:
        ids = (cache_dir / "image_ids.txt").read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        ids = []
    ids = ids if len(ids) == n else [f"#{i}" for i in range(n)]
    for mode in report.modes:
        info = manifest["modes"][mode]
        try:
            pixels = np.load(cache_dir / info["file"], mmap_mode="r")
            crcs = np.load(cache_dir / info["crc32"])
            if pixels.shape != (n, *info["shape"]) or pixels.dtype != np.uint8 or crcs.shape != (n,):
                raise ValueError("shape")
        except (OSError, ValueError):
            report.damaged += [(i, info["file"]) for i in ids]
            continue
        for start in range(0, n, chunk):
            bad = np.flatnonzero(crc32_rows(pixels[start:start + chunk]) != crcs[start:start + chunk])
            report.damaged += [(ids[start + int(j)], info["file"]) for j in bad]
    return report
