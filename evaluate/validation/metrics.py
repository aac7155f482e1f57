"""What the pass counts: one ranking per image, the figures of each model row, and the torchmetrics that sum
them across ranks.

**One top-1.** Every figure (top-1/top-5, per-class, agreement, predictions.csv, ReaL, McNemar) comes from one
ranking per image, :func:`ranked`, with a fixed tie rule: equal logits rank the lower class index first.
``torch.topk`` and ``argmax`` make no such promise and disagree with each other on ties (common after bf16
rounding), so neither is used.

Counts are torchmetrics states synchronised once, at ``compute()`` (ranks may see different numbers of batches,
so nothing collective happens per step); ratios of these integer counts are then exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torchmetrics import Metric, SumMetric


def ranked(logits: torch.Tensor, k: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Class indices of the ``k`` largest logits per row, best first; ties go to the lower index.

    A stable sort of the negated logits keeps equal values in index order, on every device. ``keep`` (a boolean
    vector over the classes, :mod:`evaluate.sources.label_space`) ranks only those classes: the others' logits are
    set to -inf first, so with ``k`` at most the kept count no other class is ever among the ``k``."""
    scores = logits.float()
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.sort(-scores, dim=-1, stable=True).indices[:, :k]


@dataclass
class ModelResult:
    name: str
    kind: str
    preprocessing: str
    count: int
    top1: float
    top5: float
    per_class: list[float]
    agreement: float | None = None  # with the reference model, top-1
    max_abs_logit_diff: float | None = None
    extra: dict = field(default_factory=dict)


def metric_name(name: str) -> str:
    """A model row's name as a logged metric's prefix: ``converted (hf)`` -> ``converted_hf``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


class ClassCounts(Metric):
    """A vector of per-class sums, synced across ranks at ``compute()`` like the other counts. Added with
    ``index_add_`` on the device: ``MulticlassAccuracy``'s ``torch.bincount`` reads the largest class on the
    host first, and builds a num_classes**2 confusion count per batch."""

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.add_state("counts", torch.zeros(num_classes), dist_reduce_fx="sum")

    def update(self, classes: torch.Tensor, values: torch.Tensor) -> None:
        self.counts.index_add_(0, classes, values.to(self.counts.dtype))

    def compute(self) -> torch.Tensor:
        return self.counts


def sum_metric() -> SumMetric:
    """A sum with no NaN check (the check reads a device flag on every update; counts are never NaN)."""
    return SumMetric(nan_strategy="disable")


def class_ratios(hits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per-class accuracy in float32 (``MulticlassAccuracy(average="none")``'s figures): 0 for a class
    without images."""
    return torch.where(images > 0, hits.float() / images.float().clamp(min=1), torch.zeros_like(hits.float()))


def percent(hits: torch.Tensor, count: int) -> float:
    """An exact ratio of integer counts, as a percentage (the counts are float32 sums of whole
    numbers, exact up to 2**24 images)."""
    return 100 * round(float(hits)) / count


def top1_probability(logits: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Each image's softmax probability of its top-1 class (of :func:`ranked`'s top-1, ties included), as a column."""
    return torch.softmax(logits.float(), dim=-1).gather(1, top[:, :1])
