"""An image's bytes, read once: hashed (sha256, the image's content identity for :mod:`evaluate.verdict.baseline`) and
decoded from memory. Every image of a run, a file or a dataset cell, is opened here (:func:`read_file_image`,
:func:`decode_cell`).

Why hash here: the bytes are in memory anyway to be decoded, so the hash costs no second read (about 2% of a
decode and resize of an ImageNet-sized JPEG on one core); hashing at the source is what makes an image folder,
parquet (whole or streamed), WebDataset shards and the pixel cache (which keeps the hashes of the bytes it decoded)
record the same hash for the same image.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat

from PIL import Image, ImageFile

# A truncated file is a bad image, not something to pad with grey (PIL's default is False too;
# set it explicitly because any imported library may have flipped it). Set here, once: every image
# of a run, file or dataset cell, is opened by this module's _open_image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def read_file_image(path: str) -> tuple[Image.Image, str]:
    """The image file at ``path``, decoded, and the sha256 of its bytes; may raise (OSError and PIL's errors)."""
    return _decode_bytes(_read_file(path), path)


def decode_cell(value) -> tuple[Image.Image, str]:
    """A dataset cell (``{"bytes", "path"}``, raw bytes, a path, or a PIL image) as a loaded image and the sha256 of
    its bytes (``""`` for a PIL image: no bytes were read)."""
    if isinstance(value, Image.Image):
        value.load()
        return value, ""
    if isinstance(value, dict):
        if value.get("bytes"):
            return _decode_bytes(value["bytes"], value.get("path"))
        if value.get("path"):
            return _decode_bytes(_read_file(value["path"]), value["path"])
        raise OSError("row has neither image bytes nor a path")
    if isinstance(value, (bytes, bytearray)):
        return _decode_bytes(value)
    if isinstance(value, str):
        return _decode_bytes(_read_file(value), value)
    raise OSError(f"cannot read an image from a {type(value).__name__}")


def _read_file(path) -> bytes:
    if not stat.S_ISREG(os.stat(path).st_mode):
        # a FIFO, socket or device named like an image: unreadable (opening a FIFO would block)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(path, "rb") as fh:
        return fh.read()


def _decode_bytes(data: bytes, name: str | None = None) -> tuple[Image.Image, str]:
    """Decode from memory (the bytes are read once: hashed and decoded); PIL's messages name ``name``."""
    return _open_image(_Named(data, name) if name else io.BytesIO(data)), hashlib.sha256(data).hexdigest()


class _Named(io.BytesIO):
    """Bytes read from a file: PIL names the stream by its repr in its errors, so it is the file's name."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self._name = str(name)

    def __repr__(self) -> str:
        return repr(self._name)


def _open_image(src) -> Image.Image:
    img = Image.open(src)
    img.load()  # decode now: a corrupt or truncated file must fail here, not later
    return img
