"""ImageNet-1k class list (the project's own copy of it, shipped in ``cvt_port/data``).

Class index = position of the WordNet id among the 1000 sorted ids (spec section 5);
the file is already in that order.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

CLASSES_TSV = Path(__file__).resolve().parent / "data" / "imagenet-1k-classes.tsv"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(wnid, name) for each class, in class-index order."""
    with CLASSES_TSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = tuple((r["wnid"], r["name"]) for r in rows)
    assert [int(r["index"]) for r in rows] == list(range(1000)), CLASSES_TSV
    assert list(out) == sorted(out), "class list must be in sorted-wnid order"
    return out


def imagenet_class_names() -> list[str]:
    return [name for _, name in imagenet_classes()]


def imagenet_wnids() -> list[str]:
    return [wnid for wnid, _ in imagenet_classes()]


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}
