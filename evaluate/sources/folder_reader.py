"""Readers of image files on disk: an ImageFolder (``root/<class>/**/<image>``, or ``root/val/<class>/...``) and a
flat folder of images with a labels file (Kaggle's ``LOC_val_solution.csv``, or one label per line). See
:mod:`evaluate.sources.layouts` for when each is chosen and how class names and numbers become indices.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cvt_port.errors import BadInput

from ..plan import PlanError
from .class_labels import class_index, is_number_like, label_token
from .samples import DataSource, Sample, all_ilsvrc, ilsvrc_val_number, image_entry

AUTO_LABEL_FILES = ("LOC_val_solution.csv", "val_labels.txt", "labels.txt")


def class_dirs(path: Path) -> list[Path]:
    """Sub-folders of ``path`` that hold at least one image file (at any depth)."""
    out = []
    for d in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(image_entry(f) for f in d.rglob("*")):
            out.append(d)
    return out


def imagefolder_root(path: Path) -> Path | None:
    """``path/val`` when that holds class folders (ImageNet's root with train/ and val/), else
    ``path`` itself when it does, else None."""
    val = path / "val"
    if val.is_dir() and class_dirs(val):
        return val
    if class_dirs(path):
        return path
    return None


def folder_class(root: Path, name: str, label2id: dict[str, int] | None, numbering) -> int:
    """The class index of a class folder: a WordNet id or a label of the model; a folder named by a number (ImageNet-V2's
    ``0``..``999``) in the stated numbering (``data.label_numbering index0``: the sorted-WordNet-id position), else
    only when the model calls a class that (a digits model's "0".."9"): never read as anything else. A number is
    written as its canonical decimal: ``010`` or ``007`` is refused, never merged with ``10`` or ``7``."""
    if is_number_like(name):
        return label_token(name, label2id, f"{root}: class folder '{name}'", numbering)
    idx = class_index(name, label2id)
    if idx is None:
        known = "" if not label2id else f" or a label of the model (e.g. {', '.join(list(label2id)[:3])})"
        raise BadInput(f"{root}: class folder '{name}' is neither an ImageNet WordNet id{known}; rename or remove it")
    return idx


def read_imagefolder(root: Path, label2id: dict[str, int] | None, numbering=None) -> DataSource:
    samples = []
    for d in class_dirs(root):
        idx = folder_class(root, d.name, label2id, numbering)
        for f in sorted(p for p in d.rglob("*") if image_entry(p)):
            if any(part.startswith(".") for part in f.relative_to(d).parts):
                continue
            samples.append(Sample(f.relative_to(root).as_posix(), idx, str(f)))
    samples.sort(key=lambda s: s.image_id)
    return DataSource("imagefolder", samples, all_ilsvrc(samples), str(root))


def read_flat(path: Path, labels_file: Path, label2id: dict[str, int] | None, numbering) -> DataSource:
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
    files = sorted((p for p in path.iterdir() if image_entry(p)), key=lambda p: p.name)
    if not files:
        raise PlanError("data.source", f"no image files directly in the folder (needed with data.labels_file {labels_file})",
                        path)
    if labels_file.suffix.lower() == ".csv":
        labels = _labels_from_csv(files, labels_file, label2id, numbering)
    else:
        labels = _labels_from_text(files, labels_file, label2id, numbering)
    samples = [Sample(f.name, lab, str(f)) for f, lab in zip(files, labels)]
    return DataSource("flat", samples, all_ilsvrc(samples), str(path))


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
