"""The label space of a run: which of the model's classes its images are scored over.

Why: ImageNet-A and ImageNet-R hold images of 200 of ImageNet-1k's 1000 classes, and their published figures
rank only those 200 (the logits of the other 800 are set aside). A 1000-way top-1 on them is another figure
(ImageNet-A's adversarial images are picked so that a ResNet-50 errs, often towards a class outside the 200; an
unmasked top-1 there can be near zero). So every model row (converted, original, stock) ranks only the classes of
the label space (:func:`evaluate.validation.metrics.ranked`), and top-1/top-5, agreement, flips, per-class and
predictions all speak of the same classes; report.json records which (:meth:`LabelSpace.record`).

The choice (``data.label_space``):

* ``full``: every class of the model (nothing masked).
* ``imagenet-a`` / ``imagenet-r``: the 200 WordNet ids shipped in ``evaluate/data/imagenet-{a,r}-wnids.txt``;
  the model must have ImageNet-1k's 1000 classes, and every class of the data must be one of the 200.
* ``data``: the classes present in the data (every image of the source, before any subset is chosen).
* not given: ``imagenet-a`` or ``imagenet-r`` when the data's classes are exactly that list (a 1000-class model),
  else ``full``. Nothing else is guessed: a data set of some other subset of classes (a 10-class ImageNet-val
  sample) is scored over all the model's classes unless ``data`` says otherwise. But it is said: when the data's
  classes are a proper subset of ImageNet-A's or -R's (150 of A's 200 folders), or any subset of the model's, the
  space carries a ``note`` (recorded in report.json, one line of the summary) naming the space used and the choices
  that rank otherwise: such a copy ranked 1000-way gives another figure (0.00% where the 200-way gives 0.67%).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cvt_port.errors import BadInput
from cvt_port.labels import imagenet_wnids, wnid_to_index

from ..plan import PlanError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
KNOWN_LISTS = {"imagenet-a": DATA_DIR / "imagenet-a-wnids.txt", "imagenet-r": DATA_DIR / "imagenet-r-wnids.txt"}
KNOWN_TITLES = {"imagenet-a": "ImageNet-A", "imagenet-r": "ImageNet-R"}
KNOWN_SIZE = 200
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class LabelSpace:
    """The classes scored (sorted class indices of the model) under a name, and the model's number of classes."""

    name: str  # "full", "imagenet-a", "imagenet-r" or "data"
    indices: tuple[int, ...]
    num_classes: int
    note: str = ""  # detected, with other choices that would rank otherwise: which, and how to choose (data.label_space)

    @property
    def is_full(self) -> bool:
        return len(self.indices) == self.num_classes

    @property
    def keep(self) -> tuple[int, ...] | None:
        """The classes to keep in the ranking, or None when every class is kept (nothing to mask)."""
        return None if self.is_full else self.indices

    def record(self) -> dict:
        """report.json's ``label_space``: the name, the number of classes scored, and the sha256 of their indices
        written one per line (``"6\\n11\\n..."``), which identifies the list whatever its name."""
        text = "".join(f"{i}\n" for i in self.indices)
        return {"name": self.name, "classes": len(self.indices),
                "sha256": hashlib.sha256(text.encode("ascii")).hexdigest(), **({"note": self.note} if self.note else {})}


@lru_cache(maxsize=None)
def known_wnids(name: str) -> tuple[str, ...]:
    """The shipped WordNet ids of ImageNet-A or -R, checked: 200 distinct ImageNet-1k ids (a damaged installation
    is a one-line error naming the file)."""
    path = KNOWN_LISTS[name]
    try:
        wnids = tuple(line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: a data file shipped with cvt-port cannot be read ({type(exc).__name__}); "
                       "reinstall cvt-port") from None
    index = wnid_to_index()
    if len(wnids) != KNOWN_SIZE or len(set(wnids)) != KNOWN_SIZE or not all(w in index for w in wnids):
        raise BadInput(f"{path}: a data file shipped with cvt-port is damaged (expected {KNOWN_SIZE} distinct "
                       "ImageNet-1k WordNet ids); reinstall cvt-port")
    return wnids


def known_indices(name: str) -> tuple[int, ...]:
    """The class indices (sorted-WordNet-id positions) of ImageNet-A's or -R's 200 classes."""
    index = wnid_to_index()
    return tuple(sorted(index[w] for w in known_wnids(name)))


def _partial_note(present: tuple[int, ...], num_classes: int) -> str:
    """What a detected ``full`` space says when the data have fewer classes than the model: a part of ImageNet-A's or
    -R's list, or any subset of the model's classes ("" when the data have them all)."""
    if not present or len(present) >= num_classes:
        return ""
    k, n = len(present), num_classes
    inside = [name for name in KNOWN_LISTS if num_classes == IMAGENET_CLASSES and set(present) < set(known_indices(name))]
    if inside:
        titles = " and ".join(f"{KNOWN_TITLES[name]}'s" for name in inside)
        return (f"the data's {k} classes are among {titles} {KNOWN_SIZE}, ranked over all {n} classes of the model; "
                f"data.label_space {' or '.join(inside)} ranks over the {KNOWN_SIZE}, data.label_space data over the "
                f"data's {k}")
    return (f"the data have {k} of the model's {n} classes, ranked over all {n}; data.label_space data ranks over the "
            f"data's {k}")


def resolve_label_space(stated: str | None, data_classes, num_classes: int) -> LabelSpace:
    """The run's label space from ``data.label_space`` (None: detected) and the classes present in the data.

    A stated space that the model or the data contradict is a one-line :class:`PlanError` naming
    ``data.label_space``: ImageNet-A/-R on a model without ImageNet-1k's 1000 classes, or data with a class outside
    the stated list."""
    present = tuple(sorted(set(int(c) for c in data_classes)))
    full = LabelSpace("full", tuple(range(num_classes)), num_classes)
    if stated == "full":
        return full
    if stated == "data":
        return LabelSpace("data", present, num_classes)
    if stated is None:
        if num_classes == IMAGENET_CLASSES:
            for name in KNOWN_LISTS:
                if present == known_indices(name):
                    return LabelSpace(name, present, num_classes)
        return dataclasses.replace(full, note=_partial_note(present, num_classes))
    title = KNOWN_TITLES[stated]
    if num_classes != IMAGENET_CLASSES:
        raise PlanError("data.label_space", f"{title}'s classes are {KNOWN_SIZE} of ImageNet-1k's {IMAGENET_CLASSES}, "
                        f"but the model has {num_classes} classes; use data.label_space data or full", stated)
    allowed = set(known_indices(stated))
    outside = [c for c in present if c not in allowed]
    if outside:
        wnids = imagenet_wnids()
        named = ", ".join(wnids[c] for c in outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        raise PlanError("data.label_space", f"the data have {len(outside)} class(es) that are not among {title}'s "
                        f"{KNOWN_SIZE} ({named}); give {title}'s data, or use data.label_space data or full", stated)
    return LabelSpace(stated, tuple(sorted(allowed)), num_classes)
