"""ImageNet-ReaL labels (Beyer et al. 2020) for ILSVRC2012 validation images.

``evaluate/data/imagenet-real-labels.json`` is a list of 50,000 lists: entry n holds the
acceptable class indices of ``ILSVRC2012_val_{n+1:08d}.JPEG``; an empty list means the image
has no acceptable label and is left out of ReaL accuracy. They only apply when every image is
identified by its ILSVRC2012 validation file name, since that name is the only key.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from .samples import ILSVRC_VAL_COUNT, ilsvrc_val_number

REAL_LABELS_JSON = Path(__file__).resolve().parent.parent / "data" / "imagenet-real-labels.json"


@lru_cache(maxsize=1)
def load_real_labels() -> tuple[tuple[int, ...], ...]:
    """All 50,000 entries, entry n for ``ILSVRC2012_val_{n+1:08d}`` (cached, read-only)."""
    data = json.loads(REAL_LABELS_JSON.read_text())
    if len(data) != ILSVRC_VAL_COUNT:
        raise ValueError(f"{REAL_LABELS_JSON}: {len(data)} entries, expected {ILSVRC_VAL_COUNT}")
    return tuple(tuple(int(c) for c in entry) for entry in data)


def real_labels_for(image_ids: Iterable[str]) -> list[list[int]] | None:
    """ReaL labels of each id (its file name parsed for the validation number), or None when
    any id is not an ILSVRC2012 validation file name."""
    numbers = [ilsvrc_val_number(i) for i in image_ids]
    if any(n is None for n in numbers):
        return None
    table = load_real_labels()
    return [list(table[n - 1]) for n in numbers]
