"""Find an ImageNet-style validation set in the layouts people actually have it in.

``discover(data, ...)`` returns a :class:`DataSource`: the layout it recognised, one
:class:`Sample` per image (a stable id, the class index in the *model's* label space, and a
reference to fetch the pixels with), and whether the ids are ILSVRC2012 validation file
names (then ImageNet-ReaL labels apply, see :mod:`evaluate.real_labels`).

Accepted layouts, tried in this order for a local path:

1. ``datasets`` saved with ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
   (a folder holding ``state.json`` + ``dataset_info.json``, or ``dataset_dict.json``).
2. ``imagefolder``: ``root/<class>/**/<image>`` (or ``root/val/<class>/...``). Only sub-folders
   that hold at least one image file count as classes; hidden entries (``.name``) are ignored.
3. ``flat``: image files directly in ``root`` plus a labels file (``labels_file=`` or, found
   automatically in the folder, ``LOC_val_solution.csv``, ``val_labels.txt`` or ``labels.txt``).
   Passing ``labels_file`` always selects this layout.
4. ``datasets`` from parquet: a ``.parquet`` file, or a folder with ``*.parquet`` files at any depth
   (a downloaded Hub snapshot). Files whose name contains ``split`` are used when there are any.
5. ``webdataset``: ``.tar`` shards, a glob or brace pattern of them, or a folder of them (:mod:`evaluate.shards`).

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

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from cvt_port.errors import BadInput, first_line

from .class_labels import (  # noqa: F401  (class_index, LABEL_NUMBERINGS: part of this module's API)
    LABEL_NUMBERINGS, class_index, classlabel_translation, label_token, stated_numbering)
from .image_bytes import decode_cell, read_file_image
from .plan import PlanError
from .shards import looks_like_shards, read_shards

IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)
AUTO_LABEL_FILES = ("LOC_val_solution.csv", "val_labels.txt", "labels.txt")
ILSVRC_VAL_COUNT = 50_000
ACCEPTED = (
    "an ImageFolder (<root>/<class>/<images> or <root>/val/<class>/<images>), "
    "a flat folder of images with a labels file (LOC_val_solution.csv, val_labels.txt or labels.txt), "
    "a datasets folder saved with save_to_disk, parquet file(s), WebDataset .tar shards (val-{000000..000063}.tar), "
    "or a Hub dataset id such as ILSVRC/imagenet-1k"
)

_ILSVRC_VAL_RE = re.compile(r"^ILSVRC2012_val_(\d{8})(?:_[^./\\]*)?\.[A-Za-z]+$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Sample:
    """One image: ``image_id`` is stable across runs (relative path, file name or ``row-<i>``),
    ``label`` is the class index in the model's label space, ``ref`` the file path (str) or the
    dataset row index (int)."""

    image_id: str
    label: int
    ref: str | int


@dataclass
class DataSource:
    """What :func:`discover` found. Picklable (DataLoader workers receive a copy)."""

    layout: str  # "imagefolder" | "flat" | "datasets" | "webdataset"
    samples: list[Sample]
    is_ilsvrc_val: bool
    root: str = ""  # the folder, file or Hub id the samples came from (for messages and reports)
    dataset: Any = field(default=None, repr=False)  # datasets.Dataset for layout "datasets"
    image_column: str | None = None

    def load_image(self, sample: Sample) -> Image.Image:
        """The decoded image (pixels loaded, so a corrupt file fails here); may raise."""
        return self.read_image(sample)[0]

    def read_image(self, sample: Sample) -> tuple[Image.Image, str]:
        """The decoded image and the sha256 of the bytes it was decoded from (``""`` for a dataset cell that holds an
        already decoded image): what identifies the image's content, whatever its id (a file name, ``row-<i>``).
        The bytes are read once, hashed and decoded from memory; may raise."""
        if isinstance(sample.ref, str):
            return read_file_image(sample.ref)
        return decode_cell(self.dataset[sample.ref][self.image_column])


def ilsvrc_val_number(image_id: str) -> int | None:
    """n for an id whose file name is ``ILSVRC2012_val_{n:08d}.<ext>`` (1 <= n <= 50,000), else None.

    A suffix after the number (``ILSVRC2012_val_00000001_n01751748.JPEG``) is tolerated: some
    re-packagings append the class to the name.
    """
    name = re.split(r"[/\\]", str(image_id))[-1]
    m = _ILSVRC_VAL_RE.match(name)
    if not m:
        return None
    n = int(m.group(1))
    return n if 1 <= n <= ILSVRC_VAL_COUNT else None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _image_entry(path: Path) -> bool:
    """An entry named like an image that is not a folder: files, and also links that lead nowhere
    or in a loop (``is_file()`` is False for those; they must fail as unreadable images, not vanish)."""
    return is_image_file(path) and not path.is_dir()


# --------------------------------------------------------------------------- entry point


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
        if labels_file is None and _HUB_ID_RE.match(text) and not text.startswith((".", "~")):
            ds = _hub_dataset_or_bad_input(text, split)
            return _from_dataset(ds, text, label2id, image_column, label_column, numbering)
        raise PlanError("data.source", f"path does not exist (give {ACCEPTED})", text)

    if path.is_file():
        if path.suffix.lower() == ".parquet":
            return _from_dataset(_load_parquet([path]), text, label2id, image_column, label_column, numbering)
        raise PlanError("data.source", f"a file that is not .parquet; give {ACCEPTED}", text)

    if labels_file is not None:
        return _flat(path, Path(labels_file), label2id, numbering)
    if (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    ):
        ds = _load_saved_dataset(path, split)
        return _from_dataset(ds, text, label2id, image_column, label_column, numbering)

    root = _imagefolder_root(path)
    if root is not None:
        return _imagefolder(root, label2id)
    if any(_image_entry(p) for p in path.iterdir()):
        found = next((path / n for n in AUTO_LABEL_FILES if (path / n).is_file()), None)
        if found is None:
            raise PlanError("data.source", "a flat folder of images needs a labels file: use data.labels_file, "
                            f"or put one of {', '.join(AUTO_LABEL_FILES)} in the folder", text)
        return _flat(path, found, label2id, numbering)
    parquet = sorted(path.rglob("*.parquet"))
    if parquet:
        return _from_dataset(_load_parquet(_files_for_split(parquet, split)), text, label2id, image_column,
                             label_column, numbering)
    if any(p.suffix.lower() == ".tar" for p in path.iterdir()):
        return _shards(text, label2id, numbering)
    if not any(not p.name.startswith(".") for p in path.iterdir()):
        raise PlanError("data.source", f"folder is empty (give {ACCEPTED})", text)
    raise PlanError("data.source", f"no images or dataset files found; accepted layouts: {ACCEPTED}", text)


# --------------------------------------------------------------------------- image folders


def _class_dirs(path: Path) -> list[Path]:
    """Sub-folders of ``path`` that hold at least one image file (at any depth)."""
    out = []
    for d in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(_image_entry(f) for f in d.rglob("*")):
            out.append(d)
    return out


def _imagefolder_root(path: Path) -> Path | None:
    """``path/val`` when that holds class folders (ImageNet's root with train/ and val/), else
    ``path`` itself when it does, else None."""
    val = path / "val"
    if val.is_dir() and _class_dirs(val):
        return val
    if _class_dirs(path):
        return path
    return None


def _imagefolder(root: Path, label2id: dict[str, int] | None) -> DataSource:
    samples = []
    for d in _class_dirs(root):
        idx = class_index(d.name, label2id)
        if idx is None:
            known = "" if not label2id else f" or a label of the model (e.g. {', '.join(list(label2id)[:3])})"
            raise BadInput(f"{root}: class folder '{d.name}' is neither an ImageNet WordNet id{known}; "
                           "rename or remove it")
        for f in sorted(p for p in d.rglob("*") if _image_entry(p)):
            if any(part.startswith(".") for part in f.relative_to(d).parts):
                continue
            samples.append(Sample(f.relative_to(root).as_posix(), idx, str(f)))
    samples.sort(key=lambda s: s.image_id)
    return DataSource("imagefolder", samples, _all_ilsvrc(samples), str(root))


def _shards(text: str, label2id, numbering) -> DataSource:
    rows, images = read_shards(text, label2id, numbering)  # evaluate.shards: headers only, nothing extracted
    samples = [Sample(image_id, label, k) for k, (image_id, label) in enumerate(rows)]
    return DataSource("webdataset", samples, _all_ilsvrc(samples), text, dataset=images, image_column="image")


# --------------------------------------------------------------------------- flat folder + labels file


def _flat(path: Path, labels_file: Path, label2id: dict[str, int] | None, numbering) -> DataSource:
    """Flat folder of images + a labels file.

    Which label belongs to which image:
    * ``LOC_val_solution.csv`` (Kaggle): by ``ImageId`` = file name without extension; the
      class is the first token (a WordNet id) of ``PredictionString``.
    * A text file, one WordNet id / class index / model label per line: when every image is an
      ILSVRC2012 validation file, line n is the label of ``ILSVRC2012_val_{n:08d}`` (the
      standard 50,000-line ground-truth file, whatever subset of images is present); otherwise
      line n is the label of the n-th image in sorted file-name order, and the line count must
      equal the image count.
    """
    if not labels_file.is_file():
        raise PlanError("data.labels_file", "file not found", labels_file)
    files = sorted((p for p in path.iterdir() if _image_entry(p)), key=lambda p: p.name)
    if not files:
        raise PlanError("data.source", f"no image files directly in the folder (needed with data.labels_file {labels_file})",
                        path)
    if labels_file.suffix.lower() == ".csv":
        labels = _labels_from_csv(files, labels_file, label2id, numbering)
    else:
        labels = _labels_from_text(files, labels_file, label2id, numbering)
    samples = [Sample(f.name, lab, str(f)) for f, lab in zip(files, labels)]
    return DataSource("flat", samples, _all_ilsvrc(samples), str(path))


def _labels_from_csv(files: list[Path], labels_file: Path, label2id, numbering) -> list[int]:
    try:
        with labels_file.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"{labels_file}: cannot read it ({exc})") from None
    if not rows or not {"ImageId", "PredictionString"} <= set(rows[0]):
        raise BadInput(f"{labels_file}: expected a CSV with header 'ImageId,PredictionString' (Kaggle's LOC_val_solution.csv)")
    by_id = {}
    for line, row in enumerate(rows, start=2):
        tokens = (row["PredictionString"] or "").split()
        if not tokens:
            raise BadInput(f"{labels_file} line {line}: empty PredictionString")
        by_id[row["ImageId"].strip()] = (line, tokens[0])
    out = []
    for f in files:
        if f.stem not in by_id:
            raise BadInput(f"{labels_file}: has no label for image {f.name} (ImageId {f.stem})")
        line, token = by_id[f.stem]
        out.append(label_token(token, label2id, f"{labels_file} line {line}", numbering))
    return out


def _labels_from_text(files: list[Path], labels_file: Path, label2id, numbering) -> list[int]:
    try:
        lines = labels_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{labels_file}: cannot read it ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    numbers = [ilsvrc_val_number(f.name) for f in files]
    if all(n is not None for n in numbers):
        wanted = numbers  # line n is for ILSVRC2012_val_{n:08d}
    else:
        wanted = list(range(1, len(files) + 1))  # line n is for the n-th image in sorted order
        if len(lines) > len(files):
            raise BadInput(
                f"{labels_file}: {len(lines)} lines for {len(files)} images; line n must be the "
                "label of the n-th image in sorted file-name order"
            )
    for f, n in zip(files, wanted):  # every image has a line before any line is interpreted
        if n > len(lines) or not lines[n - 1].strip():
            raise BadInput(f"{labels_file}: has no label for image {f.name} (needs line {n}; the file has {len(lines)})")
    return [label_token(lines[n - 1], label2id, f"{labels_file} line {n}", numbering) for n in wanted]


# --------------------------------------------------------------------------- Hugging Face datasets


def load_hub_dataset(repo_id: str, split: str):
    """The one call that reaches the Hub (tests replace ``datasets.load_dataset``)."""
    import datasets

    return datasets.load_dataset(repo_id, split=split)


def _hub_dataset_or_bad_input(repo_id: str, split: str):
    try:
        return load_hub_dataset(repo_id, split)
    except BadInput:
        raise
    except Exception as exc:  # network, auth, unknown repo or split: all the user's to fix
        raise PlanError(
            "data.source", "not an existing path, and loading it as a Hugging Face Hub dataset "
            f"(split '{split}') failed: {first_line(exc, typed=True)}", repo_id) from None


def _load_saved_dataset(path: Path, split: str):
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise PlanError("data.source", f"cannot load the saved dataset ({first_line(exc, typed=True)})", path) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise PlanError("data.split", f"no such split in {path} (it has {', '.join(ds)})", split)
        ds = ds[split]
    return ds


def _files_for_split(files: list[Path], split: str) -> list[Path]:
    matching = [f for f in files if split in f.name]
    return matching or files


def _load_parquet(files: list[Path]):
    import datasets

    try:
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    except Exception as exc:
        raise BadInput(f"{files[0]}: cannot read the parquet file(s) ({first_line(exc, typed=True)})") from None


def _is_image_feature(feature) -> bool:
    import datasets

    return isinstance(feature, datasets.Image)


def _pick_column(ds, given: str | None, plan_field: str, auto: Iterable[str], kind: str) -> str:
    names = list(ds.column_names)
    if given is not None:
        if given not in names:
            raise PlanError(plan_field, f"no such column (the dataset has {', '.join(names)})", given)
        return given
    for name in auto:
        if name in names:
            return name
    raise PlanError(plan_field, f"no {kind} column found (columns: {', '.join(names)}); name one")


def _from_dataset(ds, where: str, label2id, image_column: str | None, label_column: str | None,
                  numbering=None) -> DataSource:
    """Samples of a ``datasets.Dataset``: ids are the images' file names when every row has a
    distinct one (the Hub's ImageNet stores them), else ``row-<index>``. Labels: see the module
    docstring (ClassLabel positions translated through their names where the names say what they are)."""
    import datasets

    features = ds.features
    auto_images = [c for c in ds.column_names if _is_image_feature(features.get(c))] + ["image", "img"]
    img_col = _pick_column(ds, image_column, "data.image_column", auto_images, "image")
    lab_col = _pick_column(ds, label_column, "data.label_column", ("label", "labels"), "label")
    if len(ds) == 0:
        raise BadInput(f"{where}: the dataset has no rows")
    if _is_image_feature(features.get(img_col)):
        # Decode ourselves: the same PIL path, the same error handling as image files.
        ds = ds.cast_column(img_col, datasets.Image(decode=False))

    raw_labels = list(ds[lab_col])
    names = features[lab_col].names if isinstance(features.get(lab_col), datasets.ClassLabel) else None
    by_position = classlabel_translation(names, label2id, f"{where} column '{lab_col}'") if names else None
    labels = []
    for i, v in enumerate(raw_labels):
        if isinstance(v, bool) or v is None or (isinstance(v, int) and v < 0):
            raise BadInput(f"{where}: row {i} has no label ({v!r} in column '{lab_col}'); use a split with ground truth")
        if isinstance(v, int) and names is not None:
            if v >= len(names):
                raise BadInput(f"{where}: row {i} has label {v} but column '{lab_col}' has {len(names)} class names")
            labels.append(by_position[v] if by_position is not None else v)
        elif isinstance(v, int):
            labels.append(numbering(v, f"{where} row {i} column '{lab_col}'") if numbering else v)
        elif isinstance(v, str):
            labels.append(label_token(v, label2id, f"{where} row {i} column '{lab_col}'", numbering))
        else:
            raise BadInput(f"{where}: column '{lab_col}' holds {type(v).__name__}, not class indices or names; use data.label_column")

    names = _file_names(ds, img_col)
    if names is None or len(set(names)) != len(names):
        names = [f"row-{i}" for i in range(len(ds))]
    samples = [Sample(n, lab, i) for i, (n, lab) in enumerate(zip(names, labels))]
    return DataSource("datasets", samples, _all_ilsvrc(samples), where, dataset=ds, image_column=img_col)


def _file_names(ds, img_col: str) -> list[str] | None:
    """Base names of the images' stored paths, read from Arrow without touching the bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = ds.with_format("arrow")[img_col]
    if pa.types.is_struct(col.type) and col.type.get_field_index("path") >= 0:
        paths = pc.struct_field(col, "path").to_pylist()
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        paths = col.to_pylist()
    else:
        return None
    if any(not p for p in paths):
        return None
    return [re.split(r"[/\\]", p)[-1] for p in paths]


# --------------------------------------------------------------------------- checks


def _all_ilsvrc(samples: list[Sample]) -> bool:
    return bool(samples) and all(ilsvrc_val_number(s.image_id) is not None for s in samples)
