"""What every reader of a data source returns: one :class:`Sample` per image (a stable id, the class index in
the model's label space, a reference to fetch the bytes with) in a :class:`DataSource`, and the facts about ids
that every reader shares (image file names, ILSVRC2012 validation numbers: then ImageNet-ReaL labels apply).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .image_bytes import decode_cell, read_file_image

IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)
ILSVRC_VAL_COUNT = 50_000

_ILSVRC_VAL_RE = re.compile(r"^ILSVRC2012_val_(\d{8})(?:_[^./\\]*)?\.[A-Za-z]+$")


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


def image_entry(path: Path) -> bool:
    """An entry named like an image that is not a folder: files, and also links that lead nowhere
    or in a loop (``is_file()`` is False for those; they must fail as unreadable images, not vanish)."""
    return is_image_file(path) and not path.is_dir()


def all_ilsvrc(samples: list[Sample]) -> bool:
    return bool(samples) and all(ilsvrc_val_number(s.image_id) is not None for s in samples)
