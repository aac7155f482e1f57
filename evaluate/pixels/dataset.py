"""A torch ``Dataset`` over a :class:`~evaluate.sources.samples.DataSource` that never dies on one bad image.

Each item carries the pixels of every preprocessing mode being evaluated (so a run that
compares ``release`` and ``hf`` decodes each file once), as uint8. A file that cannot be
decoded (corrupt, truncated, unreadable, unknown format) does not raise: the item says
``ok=False``, carries zero pixels of the right shape and a one-line ``error`` naming the image
id, and the caller decides whether that fails the run or is counted (``data.skip_bad_images``).
Everything here is picklable, so DataLoader workers (``num_workers > 0``) can use it.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from PIL import Image

from cvt_port.errors import first_line

from ..sources.samples import DataSource, Sample
from .preprocess import to_rgb

# Errors that mean "this image cannot be read", not "the harness is broken". PIL reports broken
# files as OSError (UnidentifiedImageError is one), SyntaxError or ValueError (bad headers),
# EOFError, DecompressionBombError; datasets cells may fail with the same.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class EvalDataset(torch.utils.data.Dataset):
    """Items ``{"index", "label", "ok", "sha256", "pixels": {mode: uint8 (3, H, W)}}`` (+ ``"error"`` when not ok);
    ``sha256`` is the content hash of the bytes the image was decoded from (``""`` when unknown or unreadable), so
    that a comparison with an earlier run pairs images by content, not only by id (:mod:`evaluate.verdict.baseline`).

    ``transforms`` maps a mode name ("release", "hf") to a callable PIL image -> uint8 tensor;
    a transform's ``output_shape`` attribute gives the shape of the zero tensor used for a bad
    image (probed once on a synthetic image when it has none).
    """

    def __init__(self, source: DataSource, samples: Sequence[Sample], transforms: Mapping[str, Callable]):
        if not transforms:
            raise ValueError("at least one preprocessing mode is needed")
        self.source = source
        self.samples = list(samples)
        self.transforms = dict(transforms)
        self.shapes = {mode: output_shape(t) for mode, t in self.transforms.items()}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        item = {"index": i, "label": int(sample.label), "ok": True, "sha256": ""}
        try:
            # Decoding and the RGB conversion are about the file; a failure there is a bad
            # image. The transforms run outside the try: an error there is a harness bug.
            img, item["sha256"] = self.source.read_image(sample)
            img = to_rgb(img)
        except DECODE_ERRORS as exc:
            item["ok"] = False
            # a file-system error (missing, a looping link, no permission) is "read"; the rest "decode"
            verb = "read" if isinstance(exc, OSError) and exc.errno is not None else "decode"
            item["error"] = f"{sample.image_id}: cannot {verb} image ({first_line(exc, typed=True)})"
            item["pixels"] = {mode: torch.zeros(shape, dtype=torch.uint8) for mode, shape in self.shapes.items()}
            return item
        item["pixels"] = {mode: t(img) for mode, t in self.transforms.items()}
        return item


def output_shape(transform: Callable) -> tuple[int, ...]:
    """The (C, H, W) a transform gives: its ``output_shape`` attribute, else its output for a 320x240 image."""
    shape = getattr(transform, "output_shape", None)
    if shape is None:
        shape = tuple(transform(Image.new("RGB", (320, 240), (128, 64, 32))).shape)
    return tuple(int(v) for v in shape)


def collate(batch: list[dict]) -> dict:
    """Stack items: index/label LongTensor, ok BoolTensor, pixels {mode: uint8 (B, 3, H, W)},
    errors: the messages of the bad items in this batch, sha256: each item's content hash."""
    modes = batch[0]["pixels"].keys()
    return {
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "ok": torch.tensor([b["ok"] for b in batch], dtype=torch.bool),
        "pixels": {m: torch.stack([b["pixels"][m] for b in batch]) for m in modes},
        "errors": [b["error"] for b in batch if not b["ok"]],
        "sha256": [b.get("sha256", "") for b in batch],
    }
