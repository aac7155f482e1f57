"""A preprocessed-pixel cache: decode and resize an evaluation set once, read raw bytes afterwards.

Why: an evaluation spends most of its CPU time decoding JPEGs and resizing them. Repeating a
run on the same images with the same preprocessing (another checkpoint, another precision,
another device count) need not redo that work: :func:`build_cache` runs the ordinary
:class:`~evaluate.pixels.dataset.EvalDataset` once and stores its uint8 output; :func:`open_cache`
returns a :class:`CachedDataset` whose items are bit-identical to the ones the JPEG path would
give, read from plain uint8 ``.npy`` files (a batch is one read of a file per run of consecutive images, no
decoding at all).

Layout of a cache folder (format version :data:`CACHE_FORMAT`)::

    manifest.json         format, key, the parts of the key, N, per-mode shape and description,
                          library versions (informational), the files below
    pixels-<mode>.npy     uint8 (N, 3, H, W) per preprocessing mode: one file per mode, not split
                          into shards (a read at an offset already reads only the batches asked
                          for, and one file keeps a batch one contiguous slice)
    labels.npy            int64 (N,)
    ok.npy                bool (N,): False for an image that could not be decoded (zero pixels)
    errors.json           {index: message} for the images that are not ok
    image_ids.txt         the ordered image ids, one per line (its sha256 is ``samples_sha256``)
    crc32-<mode>.npy      uint32 (N,): CRC-32 of each image's cached pixels, checked on every read
    sources.npy           int64 (N, 2): size and modification time (ns) of each source file when
                          it was cached (-1 for dataset rows and files that could not be read)
    content-sha256.npy    uint8 (N, 32): sha256 of the bytes each image was decoded from (zeros where none
                          were read), so a run from the cache records the content hashes a decoding run
                          would (predictions.csv; ``--baseline`` pairs images by content). A cache built
                          before this file existed gives none: such a run is paired by id and label only

The key (:func:`cache_key`) is a sha256 over the ordered image ids, the labels, the source
files' sizes and modification times (and those of a ``datasets`` source's Arrow files), each
mode's preprocessing description and the format version. A cache is opened only for the very
same key; anything else is a one-line :class:`~cvt_port.errors.BadInput` saying which part
differs: an image replaced under the same name is not served from the cache. Every file is stat-ed for this on
every open (also by a run that takes its image list from the cache, :mod:`evaluate.pixels.cache_inputs`), and the
bytes of :data:`~evaluate.pixels.cache_files.PROBES` images spread over the list are hashed again against the
recorded content sha256, for a rewrite that kept the size and time.

Refused, not rebuilt: a run that reads a cache does not write one. Caches are shared (several jobs, every process
of a launch read one folder), a rebuild decodes every image again, and ``cache build`` (its lock, ``--overwrite``)
is the one writer; the refusal names the changed image and the command that rebuilds.

Wrong pixels are never served silently. The small files carry sha256 sums in the manifest,
checked when the cache is opened; every image's pixels carry a CRC-32, checked as it is read
(CRC-32 because it is the fastest check in the standard library, about 1.5 GB/s, and damage
to stored bytes is what it is for; it is not a defence against tampering). A damaged image is
reported like an unreadable one, by its id. :func:`verify_cache` (``python -m evaluate cache
verify --cache-dir DIR``) checks a whole cache.

A cache is written into a temporary folder beside the target and swapped into place at the
end (:mod:`cvt_port.atomic`), so an interrupted build never leaves a half-written cache behind.
Beside this module: :mod:`evaluate.pixels.cache_files` (writing and reading the files), :mod:`evaluate.pixels.cache_parts`
(a build shared by the processes of a launch), :mod:`evaluate.pixels.cache_inputs` (a run's image list from the
cache, no walk), :mod:`evaluate.pixels.cache_verify` (checking a whole cache).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from cvt_port.atomic import locked, staged_dir
from cvt_port.errors import BadInput

from .cache_files import (  # noqa: F401  (MANIFEST, REBUILD_HINT, crc32_rows: re-exported)
    MANIFEST, REBUILD_HINT, RowReader, changed_content, damaged_files, read_manifest, crc32_rows, decode_range,
    finish, refuse_existing, stored_key)
from .cache_key import (  # noqa: F401  (cache_key, CACHE_FORMAT: re-exported)
    CACHE_FORMAT, cache_key, describe_transform, difference, key_parts, sha256_json, source_stamps)
from .cache_verify import CacheReport, verify_cache  # noqa: F401  (re-exported)
from .dataset import EvalDataset, collate
from ..sources.samples import DataSource, Sample


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
    rank: int = 0,
    world_size: int = 1,
    launch: str | None = None,
    selection: dict | None = None,
) -> Path:
    """Decode and preprocess ``samples`` once into ``cache_dir``; returns ``cache_dir``.

    A folder that already holds a cache with the same key is returned as it is (nothing to
    do); any other existing folder is a :class:`BadInput` unless ``overwrite``. Without
    ``skip_bad_images`` an unreadable image fails the build, as it fails a run; with it, the
    image is stored as ``ok=False`` with its message and zero pixels.

    ``world_size`` > 1 with a ``launch`` id: every process of the launch calls this alike, each decodes
    its share and one assembles the same bytes a single process writes (:mod:`evaluate.pixels.cache_parts`).
    ``selection`` (:func:`evaluate.pixels.cache_inputs.selection`) lets runs take the image list from the cache.
    """
    cache_dir = Path(cache_dir)
    samples = list(samples)
    if not samples:
        raise BadInput(f"cache {cache_dir}: no images to cache")
    stamps = source_stamps(samples)  # before decoding: a file changed meanwhile makes the cache stale, not wrong
    parts = key_parts(samples, transforms, source, stamps)
    if world_size > 1 and launch is not None:
        from .cache_parts import build_shared

        return build_shared(cache_dir, EvalDataset(source, samples, transforms), parts, stamps, transforms, source,
                            rank, world_size, launch, num_workers, batch_size, skip_bad_images, progress, overwrite,
                            selection)
    with locked(cache_dir):  # several lone builders of one folder: the first builds, the others reuse it
        return _build_locked(cache_dir, source, samples, transforms, parts, stamps, num_workers, skip_bad_images,
                             progress, batch_size, overwrite, selection)


def _build_locked(cache_dir, source, samples, transforms, parts, stamps, num_workers, skip_bad_images, progress,
                  batch_size, overwrite, selection) -> Path:
    if not overwrite:
        if stored_key(cache_dir) == sha256_json(parts):
            return cache_dir
        refuse_existing(cache_dir, samples, parts, transforms, stamps)
    with staged_dir(cache_dir) as tmp:  # beside the target (same file system), swapped into place when complete
        dataset = EvalDataset(source, samples, transforms)
        crcs, ok, errors = decode_range(tmp, dataset, 0, len(dataset), num_workers, batch_size, skip_bad_images,
                                        progress)
        finish(tmp, dataset, parts, stamps, transforms, source, crcs, ok, errors, selection)
    return cache_dir


# --------------------------------------------------------------------------- reading


def open_cache(cache_dir: str | Path, samples: Sequence[Sample], transforms: Mapping[str, Callable],
               source: DataSource | None = None, verify: bool = True, stamps=None) -> "CachedDataset":
    """The cache at ``cache_dir`` as a dataset, only if it was built for exactly these samples, source
    files and transforms (same key); otherwise a one-line :class:`BadInput` naming what differs.
    ``source`` is needed for dataset rows. ``verify=False`` skips the per-image CRC check (for
    measuring its cost only). ``stamps``: the source files' (:mod:`evaluate.pixels.cache_inputs`: no walk)."""
    cache_dir = Path(cache_dir)
    manifest = read_manifest(cache_dir)
    stamps = source_stamps(samples) if stamps is None else stamps
    expected = key_parts(samples, transforms, source, stamps)
    if manifest.get("key") != sha256_json(expected):
        why = difference(manifest, expected, transforms, cache_dir, samples, stamps)
        raise BadInput(f"cache {cache_dir} was built with {why}; {REBUILD_HINT}")
    dataset = CachedDataset(cache_dir, manifest, verify=verify)
    rewritten = changed_content(samples, dataset.content)  # what the stamps in the key cannot see
    if rewritten is not None:
        raise BadInput(f"cache {cache_dir}: {rewritten} has other bytes than when it was cached (same size and "
                       f"modification time); {REBUILD_HINT}")
    return dataset


def _damage_message(image_id: str, cache_dir: Path, file: str) -> str:
    return (f"{image_id}: cached pixels damaged (CRC-32 mismatch in {cache_dir / file}); "
            "check the cache (`python -m evaluate cache verify` or evaluate.pixels.cache.verify_cache) and rebuild it")


class CachedBatch(list):
    """A list of items (what ``__getitems__`` must return) that also carries the batch already
    stacked: :meth:`CachedDataset.collate` returns that directly, any other collate function
    still sees an ordinary list of items."""

    def __init__(self, items: list[dict], collated: dict):
        super().__init__(items)
        self.collated = collated


class CachedDataset(torch.utils.data.Dataset):
    """Items as :class:`~evaluate.pixels.dataset.EvalDataset` gives them, read from a cache folder.

    The pixel files are read with ``pread`` (:class:`~evaluate.pixels.cache_files.RowReader`: no memory map, whose
    pages would stay in each reader's resident set), each process with its own descriptor.
    ``__getitems__`` (used by DataLoader for a whole batch) reads a batch with one read per mode
    and run of consecutive indices; use :meth:`collate` (the data module picks it up) to skip re-stacking.
    Every image read is checked against its CRC-32: a mismatch makes it a bad image (``ok``
    False, zero pixels, a message naming it), which fails the run unless bad images are skipped.
    """

    def __init__(self, cache_dir: str | Path, manifest: dict, verify: bool = True):
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest
        self.verify = verify
        self.shapes = {mode: tuple(info["shape"]) for mode, info in manifest["modes"].items()}
        damaged = damaged_files(self.cache_dir, manifest)
        if damaged:
            raise BadInput(f"cache {self.cache_dir}: {', '.join(damaged)} damaged or missing (sha256 differs from "
                           f"{MANIFEST}); {REBUILD_HINT}")
        try:
            self.labels = np.load(self.cache_dir / "labels.npy")
            self.ok = np.load(self.cache_dir / "ok.npy")
            self.errors = {int(i): m for i, m in json.loads((self.cache_dir / "errors.json").read_text("utf-8")).items()}
            self.image_ids = (self.cache_dir / "image_ids.txt").read_text("utf-8").splitlines()
            self.crcs = {mode: np.load(self.cache_dir / info["crc32"]) for mode, info in manifest["modes"].items()}
            content = manifest["files"].get("content")
            self.content = np.load(self.cache_dir / content) if content else None
            arrays = self._open()
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"cache {self.cache_dir}: a file is missing or corrupt ({type(exc).__name__}); "
                           f"{REBUILD_HINT}") from None
        n = int(manifest["count"])
        if len(self.labels) != n or len(self.ok) != n or len(self.image_ids) != n or (
                self.content is not None and self.content.shape != (n, 32)) or any(
                arr.shape != (n, *self.shapes[m]) or arr.dtype != np.uint8 or self.crcs[m].shape != (n,)
                for m, arr in arrays.items()):
            raise BadInput(f"cache {self.cache_dir}: its files do not match {MANIFEST}; {REBUILD_HINT}")

    def _open(self) -> dict[str, RowReader]:
        arrays = getattr(self, "_arrays", None)
        if arrays is None:
            arrays = {mode: RowReader(self.cache_dir / info["file"]) for mode, info in self.manifest["modes"].items()}
            self._arrays = arrays
        return arrays

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # the pixel files are reopened in each process
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a cache of {len(self)} images")
        return self.__getitems__([i % len(self)])[0]

    def __getitems__(self, indices: Sequence[int]) -> CachedBatch:
        idx = np.asarray(indices, dtype=np.int64)
        rows = {mode: reader.take(idx) for mode, reader in self._open().items()}
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
            "sha256": self._content(idx),
        }
        items = [self._item(int(i), int(labels[j]), bool(ok[j]), {m: p[j] for m, p in pixels.items()}, errors,
                            collated["sha256"][j]) for j, i in enumerate(idx)]
        return CachedBatch(items, collated)

    def _content(self, idx: np.ndarray) -> list[str]:
        """The content hashes of rows ``idx`` as hex (``""`` where none was recorded)."""
        if self.content is None:
            return [""] * len(idx)
        return [row.tobytes().hex() if row.any() else "" for row in self.content[idx]]

    @staticmethod
    def _item(index: int, label: int, ok: bool, pixels: dict, errors: dict, sha256: str = "") -> dict:
        item = {"index": index, "label": label, "ok": ok, "sha256": sha256, "pixels": pixels}
        if not ok:
            item["error"] = errors[index]
        return item

    @staticmethod
    def collate(batch: list[dict]) -> dict:
        """The stacked batch ``__getitems__`` already made; stacks other lists as ``evaluate.pixels.dataset.collate``."""
        return batch.collated if isinstance(batch, CachedBatch) else collate(batch)
