"""Find an ImageNet-style validation set in the layouts people actually have it in: one factory,
:func:`discover`, in front of one reader per source (:mod:`evaluate.sources.folder_reader`,
:mod:`evaluate.sources.dataset_reader`, :mod:`evaluate.sources.shards`, and for streaming
:mod:`evaluate.sources.streaming`).

``discover(data, ...)`` returns a :class:`DataSource`: the layout it recognised, one
:class:`Sample` per image (a stable id, the class index in the *model's* label space, and a
reference to fetch the pixels with), and whether the ids are ILSVRC2012 validation file
names (then ImageNet-ReaL labels apply, see :mod:`evaluate.sources.real_labels`).

Accepted layouts, tried in this order for a local path:

1. ``datasets`` saved with ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
   (a folder holding ``state.json`` + ``dataset_info.json``, or ``dataset_dict.json``).
2. ``imagefolder``: ``root/<class>/**/<image>`` (or ``root/val/<class>/...``). Only sub-folders
   that hold at least one image file count as classes; hidden entries (``.name``) are ignored.
   Folders named by numbers (ImageNet-V2's ``0``..``999``) are class numbers: read with ``label_numbering``.
3. ``flat``: image files directly in ``root`` plus a labels file (``labels_file=`` or, found
   automatically in the folder, ``LOC_val_solution.csv``, ``val_labels.txt`` or ``labels.txt``).
   Passing ``labels_file`` always selects this layout.
4. ``datasets`` from parquet: a ``.parquet`` file, or a folder with ``*.parquet`` files at any depth
   (a downloaded Hub snapshot). Files whose name contains ``split`` are used when there are any.
5. ``webdataset``: ``.tar`` shards, a glob or brace pattern of them, or a folder of them (:mod:`evaluate.sources.shards`).

A string that is not an existing path but looks like ``owner/name`` is loaded from the
Hugging Face Hub with ``datasets.load_dataset(id, split=split)`` (:func:`load_hub_dataset`).

Class indices (why they are computed this way; ``shared/spec/imagenet-labels.md``):

* A WordNet id (``n01440764``) maps to its position among the 1000 *sorted* ImageNet ids,
  never to its position among the folders present, so a 10-class subset still maps
  ``n01440764`` to 0.
* Any other class name maps through the model's ``label2id`` (exact match), e.g. ``"0".."9"``.
* A ``ClassLabel`` column's integers are positions among its names, so they are translated by
  the same rule: names that are all WordNet ids map by WordNet id (``load_dataset("imagefolder")``
  then ``save_to_disk`` or parquet numbers 100 classes 0..99); names that are all distinct labels
  of the model map through ``label2id``. Other names (the Hub's ImageNet-1k: human-readable
  names, "crane" twice) are read as the integers they are only when there are as many names as
  the model has classes (the Hub's positions ARE the standard index); otherwise bad input.
* A class *number* written as text (a labels file line, a string column) says nothing about its
  numbering, so it needs ``label_numbering``: ``"index0"`` (the 0-based sorted-WordNet index) or
  ``"devkit"`` (the ILSVRC2012 devkit's 1-based ILSVRC2012_IDs, translated ID -> WordNet id ->
  index through ``devkit_map``). Without it a number is bad input, unless it is one of the
  model's own label names (a digits model's "0".."9"). Never guessed.
* ``devkit_map`` is a text file with one line per class, ``<ILSVRC2012_ID> <WNID>`` (words after
  them are ignored; lines ``<WNID> <ID> ...`` are read too), 1000 distinct ids and WordNet ids. The
  devkit keeps this table in ``data/meta.mat`` (MATLAB; reading it needs scipy, which this package
  does not use), for example::

      python -c "import scipy.io as s; m = s.loadmat('data/meta.mat', squeeze_me=True)['synsets']; print(''.join(f'{r[0]} {r[1]}\\n' for r in m[:1000]))" > devkit-map.txt

* A typed integer column (not a ClassLabel) is read as the standard index, or by
  ``label_numbering`` when one is given.

An entry named like an image that cannot be read (a dangling or looping symlink, a file
without read permission) is listed like any other image, so it fails the run (or is counted
with ``skip_bad_images``) like any other unreadable image, instead of vanishing.

Every failure the user can fix is a one-line :class:`cvt_port.errors.BadInput`: a
:class:`~evaluate.plan.PlanError` naming the plan field (``data.source``) when the value itself
cannot be used, else naming the file, line, row or column whose content is wrong.
"""
from __future__ import annotations

from pathlib import Path

from ..plan import PlanError
from .class_labels import stated_numbering
from .dataset_reader import HUB_ID_RE, files_for_split, from_dataset, hub_dataset, load_parquet, load_saved_dataset
from .folder_reader import AUTO_LABEL_FILES, imagefolder_root, read_flat, read_imagefolder
from .samples import DataSource, Sample, all_ilsvrc, image_entry
from .shards import looks_like_shards, read_shards

ACCEPTED = (
    "an ImageFolder (<root>/<class>/<images> or <root>/val/<class>/<images>), "
    "a flat folder of images with a labels file (LOC_val_solution.csv, val_labels.txt or labels.txt), "
    "a datasets folder saved with save_to_disk, parquet file(s), WebDataset .tar shards (val-{000000..000063}.tar), "
    "or a Hub dataset id such as ILSVRC/imagenet-1k"
)


def discover(
    data: str | Path,
    *,
    label2id: dict[str, int] | None = None,
    labels_file: str | Path | None = None,
    split: str = "validation",
    image_column: str | None = None,
    label_column: str | None = None,
    label_numbering: str | None = None,
    devkit_map: str | Path | None = None,
) -> DataSource:
    """Recognise the layout of ``data`` and list its samples (see the module docstring).

    ``label_numbering`` ("index0" | "devkit") states what class numbers written as text mean;
    "devkit" needs ``devkit_map``."""
    numbering = stated_numbering(label_numbering, devkit_map)
    text = str(data)
    path = Path(text).expanduser()
    if labels_file is None and looks_like_shards(text) and not path.is_dir():
        return _shards(text, label2id, numbering)
    if not path.exists():
        if labels_file is None and HUB_ID_RE.match(text) and not text.startswith((".", "~")):
            ds = hub_dataset(text, split)
            return from_dataset(ds, text, label2id, image_column, label_column, numbering)
        raise PlanError("data.source", f"path does not exist (give {ACCEPTED})", text)

    if path.is_file():
        if path.suffix.lower() == ".parquet":
            return from_dataset(load_parquet([path]), text, label2id, image_column, label_column, numbering)
        raise PlanError("data.source", f"a file that is not .parquet; give {ACCEPTED}", text)

    if labels_file is not None:
        return read_flat(path, Path(labels_file), label2id, numbering)
    if (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    ):
        ds = load_saved_dataset(path, split)
        return from_dataset(ds, text, label2id, image_column, label_column, numbering)

    root = imagefolder_root(path)
    if root is not None:
        return read_imagefolder(root, label2id, numbering)
    if any(image_entry(p) for p in path.iterdir()):
        found = next((path / n for n in AUTO_LABEL_FILES if (path / n).is_file()), None)
        if found is None:
            raise PlanError("data.source", "a flat folder of images needs a labels file: use data.labels_file, "
                            f"or put one of {', '.join(AUTO_LABEL_FILES)} in the folder", text)
        return read_flat(path, found, label2id, numbering)
    parquet = sorted(path.rglob("*.parquet"))
    if parquet:
        return from_dataset(load_parquet(files_for_split(parquet, split)), text, label2id, image_column,
                             label_column, numbering)
    if any(p.suffix.lower() == ".tar" for p in path.iterdir()):
        return _shards(text, label2id, numbering)
    if not any(not p.name.startswith(".") for p in path.iterdir()):
        raise PlanError("data.source", f"folder is empty (give {ACCEPTED})", text)
    raise PlanError("data.source", f"no images or dataset files found; accepted layouts: {ACCEPTED}", text)


def _shards(text: str, label2id, numbering) -> DataSource:
    rows, images = read_shards(text, label2id, numbering)  # evaluate.sources.shards: headers only, nothing extracted
    samples = [Sample(image_id, label, k) for k, (image_id, label) in enumerate(rows)]
    return DataSource("webdataset", samples, all_ilsvrc(samples), text, dataset=images, image_column="image")
