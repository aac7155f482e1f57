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

The key (:func:`cache_key`) is a sha256 over the ordered image ids, the labels, each mode's
preprocessing description and the format version. A cache is opened only for the very same
key; anything else is a one-line :class:`~cvt_port.errors.BadInput` saying which part differs.
A cache is written into a temporary folder beside the target and renamed into place at the
end, so an interrupted build never leaves a half-written cache behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from cvt_port.errors import BadInput

from .dataset import EvalDataset, collate
from .layouts import DataSource, Sample
from .preprocess import HFTransform, ReleaseTransform
from .subset import samples_sha256

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
REBUILD_HINT = ("rebuild it with `python -m evaluate cache build` and the same data/subset/preprocessing flags "
                "as this run, or use another cache folder")
# Fields of an image processor's to_dict() that do not affect its pixels (bookkeeping of the
# file it was loaded from); every other field is part of the key.
VOLATILE_PROCESSOR_FIELDS = frozenset({"processor_class", "auto_map", "_processor_class", "_commit_hash"})


# --------------------------------------------------------------------------- the key


def describe_transform(transform: Callable) -> dict:
    """What decides a mode's pixels, as JSON-able data (part of the cache key).

    ReleaseTransform: its ``Preprocessing`` fields. HFTransform: the processor's ``to_dict()``
    without volatile fields, plus the concrete processor class (the PIL and torchvision
    backends of one processor resize differently). Any other transform must describe itself
    with a ``cache_description()`` method; one that cannot is refused rather than guessed.
    """
    if hasattr(transform, "cache_description"):
        return json.loads(json.dumps(transform.cache_description(), sort_keys=True, default=str))
    if isinstance(transform, ReleaseTransform):
        return {"kind": "release", "preprocessing": _jsonable(dataclasses.asdict(transform.pre))}
    if isinstance(transform, HFTransform):
        proc = transform.image_processor
        fields = {k: v for k, v in proc.to_dict().items() if k not in VOLATILE_PROCESSOR_FIELDS}
        return {"kind": "hf", "processor_class": type(proc).__name__, "image_processor": _jsonable(fields)}
    raise ValueError(f"cannot describe the transform {transform!r} for a cache key; give it a cache_description() method")


def _jsonable(value):
    """``value`` as plain JSON data (tuples become lists, enums and paths strings), keys sorted."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def labels_sha256(samples: Sequence[Sample]) -> str:
    """sha256 of the labels as little-endian int64, in sample order."""
    return hashlib.sha256(np.asarray([s.label for s in samples], dtype="<i8").tobytes()).hexdigest()


def key_parts(samples: Sequence[Sample], transforms: Mapping[str, Callable]) -> dict:
    """The parts of the key, stored separately in the manifest so a mismatch can be explained."""
    descriptions = {mode: describe_transform(t) for mode, t in transforms.items()}
    return {
        "format": CACHE_FORMAT,
        "images": samples_sha256(samples),
        "count": len(samples),
        "labels": labels_sha256(samples),
        "preprocessing": _sha256_json(descriptions),
    }


def cache_key(samples: Sequence[Sample], transforms: Mapping[str, Callable]) -> str:
    """sha256 over (ordered image ids, labels, each mode's preprocessing description, format)."""
    return _sha256_json(key_parts(samples, transforms))


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
    key = cache_key(samples, transforms)
    if cache_dir.exists() and not overwrite and not _is_empty_dir(cache_dir):
        if _stored_key(cache_dir) == key:
            return cache_dir
        raise BadInput(f"cache {cache_dir}: the folder exists and is not a cache of these images and settings; "
                       "remove it, choose another folder, or overwrite it")
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    # beside the target (same file system, so the final rename is atomic); mkdir, not mkdtemp,
    # so the cache gets the umask's permissions rather than mkdtemp's owner-only ones
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        dataset = EvalDataset(source, samples, transforms)
        _write(tmp, dataset, key_parts(samples, transforms), transforms, num_workers, batch_size,
               skip_bad_images, progress, source)
        _replace_dir(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cache_dir


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


def _write(tmp: Path, dataset: EvalDataset, parts: dict, transforms, num_workers: int, batch_size: int,
           skip_bad_images: bool, progress: bool, source: DataSource) -> None:
    """Fill ``tmp`` with every file of a cache; the manifest is written last."""
    n = len(dataset)
    pixels = {mode: np.lib.format.open_memmap(tmp / _pixels_file(mode), mode="w+", dtype=np.uint8,
                                              shape=(n, *shape))
              for mode, shape in dataset.shapes.items()}
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    for batch in _batches(dataset, num_workers, batch_size, progress):
        index = batch["index"].numpy()
        for mode, arr in pixels.items():
            arr[index] = batch["pixels"][mode].numpy()
        ok[index] = batch["ok"].numpy()
        bad = index[~batch["ok"].numpy()]
        if len(bad) and not skip_bad_images:
            raise BadInput(f"{batch['errors'][0]}; pass --skip-bad-images to record bad images in the cache")
        errors.update(zip(bad.tolist(), batch["errors"]))
    for arr in pixels.values():
        arr.flush()
    del pixels
    np.save(tmp / "labels.npy", np.asarray([s.label for s in dataset.samples], dtype=np.int64))
    np.save(tmp / "ok.npy", ok)
    (tmp / "errors.json").write_text(json.dumps({str(i): m for i, m in sorted(errors.items())}, indent=1) + "\n",
                                     encoding="utf-8")
    (tmp / "image_ids.txt").write_text("".join(s.image_id + "\n" for s in dataset.samples), encoding="utf-8")
    manifest = _manifest(parts, dataset, transforms, source, bad=len(errors))
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
    import PIL
    import transformers

    return {
        "format": CACHE_FORMAT,
        "key": _sha256_json(parts),
        "parts": parts,
        "count": len(dataset),
        "bad_images": bad,
        "data": str(source.root),
        "layout": source.layout,
        "modes": {mode: {"shape": list(shape), "file": _pixels_file(mode),
                         "description": describe_transform(transforms[mode])}
                  for mode, shape in dataset.shapes.items()},
        "files": {"labels": "labels.npy", "ok": "ok.npy", "errors": "errors.json", "image_ids": "image_ids.txt"},
        # informational, not part of the key: the versions that produced the pixels
        "versions": {"numpy": np.__version__, "pillow": PIL.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``; an old ``target`` is removed only once the new one is in place."""
    old = None
    if target.exists():
        old = target.parent / f"{tmp.name}.old"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- reading


def open_cache(cache_dir: str | Path, samples: Sequence[Sample], transforms: Mapping[str, Callable]) -> "CachedDataset":
    """The cache at ``cache_dir`` as a dataset, only if it was built for exactly these samples and
    transforms (same key); otherwise a one-line :class:`BadInput` naming what differs."""
    cache_dir = Path(cache_dir)
    manifest = _read_manifest(cache_dir)
    expected = key_parts(samples, transforms)
    if manifest.get("key") != _sha256_json(expected):
        raise BadInput(f"cache {cache_dir} was built with {_difference(manifest, expected, transforms)}; {REBUILD_HINT}")
    return CachedDataset(cache_dir, manifest)


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
    if not isinstance(manifest["modes"], dict) or not manifest["modes"]:
        raise ValueError("no modes")
    for info in manifest["modes"].values():
        if len(info["shape"]) != 3 or not isinstance(info["file"], str):
            raise ValueError("bad mode entry")


def _difference(manifest: dict, expected: dict, transforms: Mapping[str, Callable]) -> str:
    """Which part of the key differs, in words."""
    stored = manifest["parts"]
    if stored.get("format") != expected["format"]:
        return f"cache format {stored.get('format')} (this version reads format {expected['format']})"
    reasons = []
    if stored.get("images") != expected["images"]:
        reasons.append(f"another image list ({stored.get('count')} images, ids sha256 {str(stored.get('images'))[:12]}; "
                       f"this run: {expected['count']} images, {expected['images'][:12]})")
    elif stored.get("labels") != expected["labels"]:
        reasons.append("other labels for the same images")
    if stored.get("preprocessing") != expected["preprocessing"]:
        reasons.append(f"other preprocessing settings ({_modes_difference(manifest, transforms)})")
    return " and ".join(reasons) or "other settings (key mismatch)"


def _modes_difference(manifest: dict, transforms: Mapping[str, Callable]) -> str:
    stored = manifest.get("modes", {})
    if set(stored) != set(transforms):
        return f"modes {', '.join(sorted(stored))} vs {', '.join(sorted(transforms))}"
    changed = [m for m in sorted(transforms) if stored[m].get("description") != describe_transform(transforms[m])]
    return "differs in " + ", ".join(f"'{m}'" for m in changed) if changed else "descriptions differ"


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
    """

    def __init__(self, cache_dir: str | Path, manifest: dict):
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest
        self.shapes = {mode: tuple(info["shape"]) for mode, info in manifest["modes"].items()}
        try:
            self.labels = np.load(self.cache_dir / "labels.npy")
            self.ok = np.load(self.cache_dir / "ok.npy")
            self.errors = {int(i): m for i, m in json.loads((self.cache_dir / "errors.json").read_text("utf-8")).items()}
            arrays = self._open()
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"cache {self.cache_dir}: a file is missing or corrupt ({type(exc).__name__}); "
                           f"{REBUILD_HINT}") from None
        n = int(manifest["count"])
        if len(self.labels) != n or len(self.ok) != n or any(
                arr.shape != (n, *self.shapes[m]) or arr.dtype != np.uint8 for m, arr in arrays.items()):
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
        pixels = {mode: torch.from_numpy(_take(arr, idx)) for mode, arr in self._open().items()}
        labels, ok = self.labels[idx], self.ok[idx]
        collated = {
            "index": torch.from_numpy(idx.copy()),
            "label": torch.from_numpy(labels.astype(np.int64)),
            "ok": torch.from_numpy(ok.copy()),
            "pixels": pixels,
            "errors": [self.errors[int(i)] for i, good in zip(idx, ok) if not good],
        }
        return CachedBatch([self._item(j, int(i), int(labels[j]), bool(ok[j]), pixels) for j, i in enumerate(idx)],
                           collated)

    def _item(self, j: int, index: int, label: int, ok: bool, pixels: dict) -> dict:
        item = {"index": index, "label": label, "ok": ok, "pixels": {m: p[j] for m, p in pixels.items()}}
        if not ok:
            item["error"] = self.errors[index]
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
