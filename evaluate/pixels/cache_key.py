"""The key of a preprocessed-pixel cache (:mod:`evaluate.pixels.cache`), and what differs when it does not match.

The key is a sha256 over the parts :func:`key_parts` lists, each stored in the cache's
manifest so a mismatch can be explained in one line: the ordered image ids, the labels, the
source files' sizes and modification times (and those of a ``datasets`` source's Arrow files),
each preprocessing mode's description, and the format version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..sources.samples import DataSource, Sample
from .preprocess import HFTransform, ReleaseTransform
from ..sources.subset import samples_sha256

CACHE_FORMAT = 2
# Fields of an image processor's to_dict() that do not affect its pixels (bookkeeping of the
# file it was loaded from); every other field is part of the key.
VOLATILE_PROCESSOR_FIELDS = frozenset({"processor_class", "auto_map", "_processor_class", "_commit_hash"})


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


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def labels_sha256(samples: Sequence[Sample]) -> str:
    """sha256 of the labels as little-endian int64, in sample order."""
    return hashlib.sha256(np.asarray([s.label for s in samples], dtype="<i8").tobytes()).hexdigest()


def source_stamps(samples: Sequence[Sample]) -> np.ndarray:
    """int64 (N, 2): size and modification time (ns) of each sample's file, -1 where there is none
    (a dataset row) or it cannot be read (an unreadable image stays an unreadable image)."""
    out = np.full((len(samples), 2), -1, dtype=np.int64)
    for i, s in enumerate(samples):
        if isinstance(s.ref, str):
            try:
                st = os.stat(s.ref)
            except OSError:
                continue
            out[i] = (st.st_size, st.st_mtime_ns)
    return out


def _dataset_files(source: DataSource | None) -> list:
    """(name, size, mtime_ns) of the Arrow files behind a ``datasets`` source: its rows change with them."""
    files = getattr(getattr(source, "dataset", None), "cache_files", None) or []
    out = []
    for f in files:
        try:
            st = os.stat(f["filename"])
            out.append([Path(f["filename"]).name, st.st_size, st.st_mtime_ns])
        except (OSError, KeyError, TypeError):
            out.append([str(f), -1, -1])
    return out


def key_parts(samples: Sequence[Sample], transforms: Mapping[str, Callable], source: DataSource | None = None,
              stamps: np.ndarray | None = None) -> dict:
    """The parts of the key, stored separately in the manifest so a mismatch can be explained.

    ``source`` is needed for dataset rows (their Arrow files are stamped); ``stamps`` are
    :func:`source_stamps` when already taken."""
    if source is None and any(not isinstance(s.ref, str) for s in samples):
        raise ValueError("the cache key of dataset rows needs their DataSource (source=...)")
    descriptions = {mode: describe_transform(t) for mode, t in transforms.items()}
    stamps = source_stamps(samples) if stamps is None else stamps
    return {
        "format": CACHE_FORMAT,
        "images": samples_sha256(samples),
        "count": len(samples),
        "labels": labels_sha256(samples),
        "sources": hashlib.sha256(np.ascontiguousarray(stamps, dtype="<i8").tobytes()
                                  + json.dumps(_dataset_files(source)).encode("utf-8")).hexdigest(),
        "preprocessing": sha256_json(descriptions),
    }


def cache_key(samples: Sequence[Sample], transforms: Mapping[str, Callable], source: DataSource | None = None) -> str:
    """sha256 over (ordered image ids, labels, source file sizes and times, each mode's preprocessing
    description, format)."""
    return sha256_json(key_parts(samples, transforms, source))


def difference(manifest: dict, expected: dict, transforms: Mapping[str, Callable], cache_dir: Path,
                samples: Sequence[Sample], stamps: np.ndarray) -> str:
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
    elif stored.get("sources") != expected["sources"]:
        reasons.append(f"other source files: {changed_sources(cache_dir, samples, stamps)}")
    if stored.get("preprocessing") != expected["preprocessing"]:
        reasons.append(f"other preprocessing settings ({modes_difference(manifest, transforms)})")
    return " and ".join(reasons) or "other settings (key mismatch)"


def changed_sources(cache_dir: Path, samples: Sequence[Sample], stamps: np.ndarray) -> str:
    try:
        before = np.load(cache_dir / "sources.npy")
        changed = np.flatnonzero((before != stamps).any(axis=1)) if before.shape == stamps.shape else None
    except (OSError, ValueError):
        changed = None
    if changed is None or not len(changed):
        return "the data set's files changed size or modification time since the build"
    return (f"{len(changed)} image(s) changed size or modification time since the build, "
            f"e.g. {samples[int(changed[0])].image_id}")


def modes_difference(manifest: dict, transforms: Mapping[str, Callable]) -> str:
    stored = manifest.get("modes", {})
    if set(stored) != set(transforms):
        return f"modes {', '.join(sorted(stored))} vs {', '.join(sorted(transforms))}"
    changed = [m for m in sorted(transforms) if stored[m].get("description") != describe_transform(transforms[m])]
    return "differs in " + ", ".join(f"'{m}'" for m in changed) if changed else "descriptions differ"
