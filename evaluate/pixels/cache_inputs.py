"""A run's images read from its cache instead of a walk of the data folder.

Why: listing ImageNet's 50,000 JPEGs and stat-ing each (to compare sizes and times with the cache's) takes
minutes on a cluster file system, once per process, before every run from a cache that already records the
ordered image ids, their labels and their files' stamps. A cache built by ``cache build`` records also what
chose that list (:func:`selection`: the data folder's real path, the labels file's, devkit map's and subset
file's sha256, the subset size and seed, the label numbering, and the modification times of the data folder
and of every folder holding a listed image). A run whose flags give the same selection takes the list from
the cache; any difference (another ``--data``, subset, seed or file) falls back to the walk, where the cache
key refuses a cache of other images in one line naming what differs.

Staleness. Every file's size and modification time is checked against the cache's record at build, by every run
that walks and by every run from the cache: a stat of each listed file, no listing of any folder (50,000 stats take
a fraction of a second, ``python -m benchmarks cache-stat``). A run from the cache also compares the folders'
modification times (a file added, removed or renamed in the data folder or in a class folder changes them: the run
then walks). A file whose stamp changed (an image rewritten in place under its name) makes the key differ, and the
cache is refused naming the image (:func:`evaluate.pixels.cache.open_cache`), never served. What a stat cannot see
(bytes rewritten with the size and time kept) the content hashes of a sample of the images are checked for
(:func:`evaluate.pixels.cache_files.changed_content`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .cache_key import source_stamps
from ..sources.inputs import Inputs, check_label_range, prepare_data
from ..sources.samples import DataSource, Sample
from ..plan import DataSpec

FILE_LAYOUTS = ("imagefolder", "flat")


def _digest(path) -> str | None:
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _spec_selection(spec: DataSpec) -> dict | None:
    if spec.streaming or spec.source is None or not Path(spec.source).is_dir():
        return None
    return {"source": os.path.realpath(spec.source), "labels_file": _digest(spec.labels_file),
            "label_numbering": getattr(spec.label_numbering, "value", spec.label_numbering),
            "devkit_map": _digest(spec.devkit_map), "subset": spec.subset,
            "seed": spec.seed if spec.subset is not None else None, "subset_file": _digest(spec.subset_file)}


def _folders(root: str, image_ids) -> str:
    """sha256 over the modification times of the data folder and every folder holding a listed image."""
    folders = sorted({os.path.dirname(i) for i in image_ids} | {""})
    stamps = [[f, os.stat(os.path.join(root, f)).st_mtime_ns] for f in folders]
    return hashlib.sha256(json.dumps(stamps).encode("utf-8")).hexdigest()


def selection(spec: DataSpec, inputs: Inputs) -> dict | None:
    """What chose ``inputs`` from ``spec``, recorded in the cache's manifest; None where a run cannot take the
    list from a cache (not a local folder of image files)."""
    try:
        chosen = _spec_selection(spec)
        if chosen is None or inputs.source.layout not in FILE_LAYOUTS:
            return None
        return {**chosen, "folders": _folders(str(spec.source), [s.image_id for s in inputs.samples]),
                "layout": inputs.source.layout, "is_ilsvrc_val": inputs.source.is_ilsvrc_val,
                "is_subset": inputs.is_subset, "data_classes": list(inputs.data_classes)}
    except OSError:
        return None


def inputs_from_cache(cache_dir: Path, spec: DataSpec, classes: int = 0) -> tuple[Inputs, np.ndarray] | None:
    """(the run's inputs, its files' stamps now) from the cache at ``cache_dir`` when it was built with this
    ``spec``'s selection and no folder changed; None otherwise (the caller walks the folder). Every listed file is
    stat-ed: a stamp that differs from the cache's record makes the key differ when the cache is opened, which is
    refused naming the image (:func:`evaluate.pixels.cache.open_cache`, which also checks the cache's own files)."""
    try:
        recorded = json.loads((Path(cache_dir) / "manifest.json").read_text(encoding="utf-8")).get("selection")
        wanted = _spec_selection(spec)
        if not isinstance(recorded, dict) or wanted is None or any(recorded.get(k) != v for k, v in wanted.items()):
            return None
        ids = (Path(cache_dir) / "image_ids.txt").read_text(encoding="utf-8").splitlines()
        labels = np.load(Path(cache_dir) / "labels.npy")
        stamps = np.load(Path(cache_dir) / "sources.npy")
        data_classes = tuple(int(c) for c in recorded["data_classes"])  # the whole source's, not the subset's
        if not (len(ids) == len(labels) == len(stamps)) or _folders(str(spec.source), ids) != recorded["folders"]:
            return None
        root = str(spec.source)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    samples = [Sample(i, int(label), os.path.join(root, i)) for i, label in zip(ids, labels)]
    stamps = source_stamps(samples)  # every file, now: what changed since the build is refused by the key
    if classes:
        check_label_range(samples, classes, spec.source)
    source = DataSource(recorded["layout"], samples, bool(recorded["is_ilsvrc_val"]), root=root)
    return Inputs(source, samples, bool(recorded["is_subset"]), data_classes), stamps


def run_inputs(spec: DataSpec, cache_dir: Path | None, label2id, classes: int) -> tuple[Inputs, np.ndarray | None]:
    """A run's images and, when they come from ``cache_dir``'s own list (built with these data flags), the
    source stamps recorded with it: a run from the cache walks no JPEG folder; otherwise the data are listed."""
    if cache_dir is not None:
        cached = inputs_from_cache(Path(cache_dir), spec, classes)
        if cached is not None:
            return cached
    return prepare_data(spec, label2id, classes), None
