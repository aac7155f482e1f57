"""The original on a sample only (``models.reference_sample``, ``--reference-sample``): which images, and why so many.

The original's forward doubles a gate's cost. Its paired checks (top-1 against the original, agreement) are
statements about the whole data made from the images both models ran on; on a random sample they are made once the
sample can show a change on ``gate.detectable_drop`` % of all images with probability ``gate.power``
(:func:`evaluate.verdict.stats.images_to_detect_disagreement`: 459 images for 1 % at 0.99). So when the converted
weights are provably the original's (:mod:`evaluate.models.same_weights`), the original runs on that many images,
chosen as ``data.subset`` chooses (class-balanced, seeded by ``data.seed``, :func:`evaluate.sources.subset.select_subset`),
and the converted model on every image; the gate (:func:`evaluate.verdict.gate.judge`) makes the paired checks on
the sample and the recorded-top-1 check on every image, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..sources.samples import Sample
from ..sources.subset import samples_sha256, select_subset
from .gate_settings import gate_settings
from .stats import images_to_detect_disagreement


def sample_size(variant) -> int:
    """Images the paired checks need at the variant's gate settings (459 at the defaults)."""
    g = gate_settings(variant)
    return images_to_detect_disagreement(g.detectable_drop, g.power)


@dataclass(frozen=True)
class ReferenceSample:
    """The positions (in the run's image list) the original runs on, and what report.json says about them."""

    positions: frozenset[int]
    record: dict


def choose(samples: Sequence[Sample], variant, seed: int, proof: dict) -> ReferenceSample | None:
    """The original's sample among the run's ``samples``; None when the sample would be every image."""
    g = gate_settings(variant)
    k = sample_size(variant)
    if k >= len(samples):
        return None
    chosen = select_subset(samples, k, seed)
    where = {id(s): i for i, s in enumerate(samples)}
    return ReferenceSample(frozenset(where[id(s)] for s in chosen), {
        "images": k, "of": len(samples), "seed": seed, "sha256": samples_sha256(chosen),
        "why": f"images_to_detect_disagreement(gate.detectable_drop={g.detectable_drop:g}, gate.power={g.power:g})",
        "checks_on_sample": ["reference_top1", "agreement"], "checks_on_every_image": ["recorded_top1"],
        "proof": proof})


def gate_note(sample: dict | None) -> str:
    """The gate line's note of which checks were made on which images ('' for a run without a sample)."""
    if not sample:
        return ""
    return (f"; the original on a seeded sample of {sample['images']} of {sample['of']} images: "
            f"{', '.join(sample['checks_on_sample'])} on the sample, "
            f"{', '.join(sample['checks_on_every_image'])} on all {sample['of']}")
