"""Which images an evaluation runs on, chosen reproducibly, and a fingerprint of that choice.

A quick run on a subset of N images (``data.subset``) must be comparable between machines and between the
original and the converted model, so the choice depends only on (the samples, N, seed), and
``samples_sha256`` lets a report prove which images were used.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from .samples import Sample
from ..plan import PlanError


def select_subset(samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
    """``n`` samples, balanced over classes, deterministic in (samples, n, seed).

    Rule: group the samples by class; within each class sort by ``image_id`` and shuffle with
    one ``random.Random(seed)`` visiting the classes in ascending class index; then take one
    sample per class in ascending class index, round after round, until ``n`` are taken (so when
    ``n`` is not a multiple of the class count the lowest class indices get one more). The
    result is returned in the order the samples had in the input (data-source order), which
    keeps reads sequential and makes the order independent of the seed.
    """
    if n <= 0:
        raise PlanError("data.subset", "must be a positive number of images", n)
    if n > len(samples):
        raise PlanError("data.subset", f"is larger than the data ({len(samples)} images)", n)
    by_class: dict[int, list[int]] = defaultdict(list)
    for pos, s in enumerate(samples):
        by_class[s.label].append(pos)
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_class):
        positions = sorted(by_class[label], key=lambda p: samples[p].image_id)
        rng.shuffle(positions)
        queues.append(positions)
    chosen: list[int] = []
    round_ = 0
    while len(chosen) < n:
        for q in queues:
            if round_ < len(q):
                chosen.append(q[round_])
                if len(chosen) == n:
                    break
        round_ += 1
    return [samples[p] for p in sorted(chosen)]


def read_subset_file(path: str | Path, samples: Sequence[Sample]) -> list[Sample]:
    """The samples named by a text file of image ids, one per line, in the file's order.

    Blank lines are ignored. An id that is not in the data, or one listed twice, is a
    :class:`~evaluate.plan.PlanError` naming it (a pinned list must mean exactly what it says).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PlanError("data.subset_file", "file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError("data.subset_file", f"cannot read it ({exc})", path) from None
    by_id = {s.image_id: s for s in samples}
    out, seen = [], set()
    for lineno, line in enumerate(lines, start=1):
        image_id = line.strip()
        if not image_id:
            continue
        if image_id not in by_id:
            raise PlanError("data.subset_file", f"line {lineno}: image id '{image_id}' is not in the data", path)
        if image_id in seen:
            raise PlanError("data.subset_file", f"line {lineno}: image id '{image_id}' is listed twice", path)
        seen.add(image_id)
        out.append(by_id[image_id])
    if not out:
        raise PlanError("data.subset_file", "lists no image ids", path)
    return out


def samples_sha256(samples: Sequence[Sample]) -> str:
    """sha256 of the ordered image ids, one per line, utf-8, each line newline-terminated."""
    h = hashlib.sha256()
    for s in samples:
        h.update(s.image_id.encode("utf-8") + b"\n")
    return h.hexdigest()


def write_subset_file(path: str | Path, samples: Sequence[Sample]) -> None:
    """Write the ids in the format :func:`read_subset_file` reads (its sha256 is ``samples_sha256``)."""
    Path(path).write_text("".join(s.image_id + "\n" for s in samples), encoding="utf-8")
