"""The reader of Hugging Face ``datasets``: a Hub dataset id, a folder saved with ``save_to_disk``, parquet files.
Also the shared column logic of :mod:`evaluate.sources.streaming` (the same columns, labels and ids streamed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from cvt_port.errors import BadInput, first_line

from ..plan import PlanError
from .class_labels import classlabel_translation, label_token
from .samples import DataSource, Sample, all_ilsvrc

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_hub_dataset(repo_id: str, split: str):
    """The one call that reaches the Hub (tests replace ``datasets.load_dataset``)."""
    import datasets

    return datasets.load_dataset(repo_id, split=split)


def hub_dataset(repo_id: str, split: str):
    try:
        return load_hub_dataset(repo_id, split)
    except BadInput:
        raise
    except Exception as exc:  # network, auth, unknown repo or split: all the user's to fix
        raise PlanError(
            "data.source", "not an existing path, and loading it as a Hugging Face Hub dataset "
            f"(split '{split}') failed: {first_line(exc, typed=True)}", repo_id) from None


def load_saved_dataset(path: Path, split: str):
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


def files_for_split(files: list[Path], split: str) -> list[Path]:
    matching = [f for f in files if split in f.name]
    return matching or files


def load_parquet(files: list[Path]):
    import datasets

    try:
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    except Exception as exc:
        raise BadInput(f"{files[0]}: cannot read the parquet file(s) ({first_line(exc, typed=True)})") from None


def is_image_feature(feature) -> bool:
    import datasets

    return isinstance(feature, datasets.Image)


def pick_column(ds, given: str | None, plan_field: str, auto: Iterable[str], kind: str) -> str:
    names = list(ds.column_names)
    if given is not None:
        if given not in names:
            raise PlanError(plan_field, f"no such column (the dataset has {', '.join(names)})", given)
        return given
    for name in auto:
        if name in names:
            return name
    raise PlanError(plan_field, f"no {kind} column found (columns: {', '.join(names)}); name one")


def from_dataset(ds, where: str, label2id, image_column: str | None, label_column: str | None,
                  numbering=None) -> DataSource:
    """Samples of a ``datasets.Dataset``: ids are the images' file names when every row has a
    distinct one (the Hub's ImageNet stores them), else ``row-<index>``. Labels: see the module
    docstring (ClassLabel positions translated through their names where the names say what they are)."""
    import datasets

    features = ds.features
    auto_images = [c for c in ds.column_names if is_image_feature(features.get(c))] + ["image", "img"]
    img_col = pick_column(ds, image_column, "data.image_column", auto_images, "image")
    lab_col = pick_column(ds, label_column, "data.label_column", ("label", "labels"), "label")
    if len(ds) == 0:
        raise BadInput(f"{where}: the dataset has no rows")
    if is_image_feature(features.get(img_col)):
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
    return DataSource("datasets", samples, all_ilsvrc(samples), where, dataset=ds, image_column=img_col)


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
