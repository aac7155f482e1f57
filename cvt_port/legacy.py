"""The legacy Hugging Face conversion script's ``--cvt_model`` and ``--image_size``, as checks on the variant.

transformers' ``convert_cvt_original_pytorch_checkpoint_to_pytorch.py`` took ``--cvt_model`` (default
``cvt-w24``: it read characters 4-6 of the name's last path part, "13" or "21", and took anything else
for W24) and ``--image_size`` (default 384: the image processor's evaluation size). Release scripts
still pass them. Here they keep that meaning, but the weights decide: a name or size that contradicts
what the weights and the release file name say is one line, exit 2, instead of a silently wrong
model. Omitted, they are read off the weights like everything else (the legacy defaults named one
file, the W24; assuming them would refuse every other file). Given, they also settle what the weights
cannot say: a renamed CvT-13 file with ``--image_size 224`` is the 224 variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import WeightsShape, choose_variant
from .errors import BadInput
from .variants import Variant


@dataclass(frozen=True)
class LegacyHints:
    """``--cvt_model`` (a variant name or a prefix of one at a '-': ``cvt-13``, ``microsoft/cvt-w24``) and
    ``--image_size`` (the evaluation size); ``None`` where not given."""

    cvt_model: str | None = None
    image_size: int | None = None

    def __bool__(self) -> bool:
        return self.cvt_model is not None or self.image_size is not None

    @property
    def model_name(self) -> str | None:
        """The name without its owner (the legacy script read ``rsplit('/', 1)[-1]`` too)."""
        return None if self.cvt_model is None else self.cvt_model.rsplit("/", 1)[-1].strip().lower()

    def admits(self, v: Variant) -> bool:
        name = self.model_name
        if name is not None and not (v.name == name or v.name.startswith(name + "-")):
            return False
        return self.image_size is None or v.preprocessing.img_size == self.image_size

    def flags(self) -> str:
        parts = [f"--cvt_model {self.cvt_model}"] if self.cvt_model is not None else []
        if self.image_size is not None:
            parts.append(f"--image_size {self.image_size}")
        return " ".join(parts)

    def check_known(self, variants: dict[str, Variant], requested: Variant | None = None) -> None:
        """Before the checkpoint is read: the name and size describe some variant in configs/ (and
        ``--variant``, when given)."""
        if self.image_size is not None and self.image_size <= 0:
            raise BadInput(f"--image_size {self.image_size}: must be a positive number of pixels (224 or 384)")
        named = [v for v in variants.values() if LegacyHints(self.cvt_model).admits(v)]
        if not named:
            families = sorted({"-".join(v.name.split("-")[:2]) for v in variants.values()})
            raise BadInput(f"--cvt_model {self.cvt_model}: no variant in configs/ is called that; "
                           f"use one of {', '.join(families)} (or a full variant name)")
        if not [v for v in named if self.admits(v)]:
            sizes = sorted({v.preprocessing.img_size for v in named})
            raise BadInput(f"{self.flags()}: no such variant in configs/; "
                           f"{self.cvt_model or 'the variants'} evaluate at {', '.join(map(str, sizes))}")
        if requested is not None and not self.admits(requested):
            raise BadInput(f"{self.flags()} disagrees with --variant {requested.name} (evaluated at "
                           f"{requested.preprocessing.img_size}); give one or make them agree")


def pick_variant(path: Path, shape: WeightsShape, variants: dict[str, Variant], requested: Variant | None,
                 hints: LegacyHints) -> Variant:
    """The variant the weights (and file name, and ``--variant``) imply, which the hints must admit;
    where the weights fit several variants, the hints may choose among them."""
    if not hints:
        return choose_variant(path, shape, variants, requested)
    hints.check_known(variants, requested)
    by_file = any(v.release_file and v.release_file.lower() == path.name.lower() for v in variants.values())
    if requested is None and not by_file:
        fits = [v for v in variants.values() if not shape.differences(v.architecture)]
        admitted = [v for v in fits if hints.admits(v)]
        if len(admitted) == 1:
            requested = admitted[0]
        elif fits and not admitted:
            raise BadInput(f"{path}: {hints.flags()} disagrees with the weights, which fit "
                           f"{', '.join(sorted(v.name for v in fits))} ({_describe(shape)})")
        elif len(admitted) > 1:
            raise BadInput(f"{path}: the weights and {hints.flags()} fit several variants "
                           f"({', '.join(sorted(v.name for v in admitted))}); pass --variant NAME")
    chosen = choose_variant(path, shape, variants, requested)
    if not hints.admits(chosen):
        said = "the weights and the release file name say" if by_file else "the weights say"
        raise BadInput(f"{path}: {hints.flags()} disagrees with the checkpoint: {said} {chosen.name} "
                       f"({_describe(shape)}, evaluated at {chosen.preprocessing.img_size}); "
                       "correct the flag or drop it")
    return chosen


def _describe(shape: WeightsShape) -> str:
    return f"depth {list(shape.depth)}, widths {list(shape.embed_dim)}"


__all__ = ["LegacyHints", "pick_variant"]
