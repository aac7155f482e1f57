"""The images of a run and how they are preprocessed, from the plan's :class:`~evaluate.plan.DataSpec`.

A bad data path, labels file or subset is found here, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvt_port.hf import quiet_transformers
from cvt_port.variants import Variant

from .layouts import DataSource, Sample, discover
from .models import LoadedFolder
from .plan import DataSpec, Mode, PlanError
from .preprocess import HFTransform, ReleaseTransform
from .subset import read_subset_file, select_subset


@dataclass
class Inputs:
    """The data source, the images chosen from it (in evaluation order), and whether that is a subset."""

    source: DataSource
    samples: list[Sample]
    is_subset: bool


def prepare_data(spec: DataSpec, label2id: dict[str, int] | None, classes: int = 0) -> Inputs:
    """Discover the layout and choose the images; ``label2id`` maps folder names that are the model's labels;
    with ``classes`` (the model's number of outputs; 0: not known), every label is checked to be one."""
    source = discover(spec.source, label2id=label2id, labels_file=spec.labels_file, split=spec.split,
                      image_column=spec.image_column, label_column=spec.label_column,
                      label_numbering=spec.label_numbering, devkit_map=spec.devkit_map)
    if classes:
        check_label_range(source.samples, classes, spec.source)
    if spec.subset_file is not None:
        return Inputs(source, read_subset_file(spec.subset_file, source.samples), True)
    if spec.subset is not None:
        samples = select_subset(source.samples, spec.subset, spec.seed)
        return Inputs(source, samples, spec.subset < len(source.samples))
    return Inputs(source, list(source.samples), False)


def build_transforms(modes: tuple[Mode, ...], variant: Variant | None, folder: LoadedFolder) -> dict:
    """One transform per preprocessing mode, keyed by the mode's name ("release", "hf")."""
    transforms = {}
    for mode in modes:
        if mode is Mode.RELEASE:
            if variant is None:
                raise PlanError("models.config", f"{folder.source} records no cvt_port variant: name the variant "
                                "(or use preprocessing hf to run the folder's own image processor)")
            transforms[mode.value] = ReleaseTransform(variant.preprocessing)
        else:
            from transformers import AutoImageProcessor

            try:
                with quiet_transformers():
                    proc = AutoImageProcessor.from_pretrained(folder.source)
            except Exception as exc:
                raise PlanError("data.preprocessing", f"{folder.source} has no usable image processor "
                                f"({type(exc).__name__}); use preprocessing release", mode.value) from None
            transforms[mode.value] = HFTransform(proc)
    return transforms


def num_classes(folder: LoadedFolder, variant: Variant | None) -> int:
    """The model's number of outputs: its config, else the variant's architecture."""
    return int(folder.config.get("num_labels") or len(folder.config.get("id2label") or {}) or
               (variant.architecture.num_classes if variant else 0))


def check_label_range(samples: list[Sample], n: int, source: object = None) -> None:
    """Every label must be one of the model's ``n`` outputs, found before any model is loaded rather than
    inside a metric (a WordNet-id folder fed to a 10-class model would otherwise be scored silently wrong)."""
    bad = next((s for s in samples if not 0 <= s.label < n), None)
    if bad is not None:
        raise PlanError("data.source", f"image {bad.image_id} has class index {bad.label} but the model has {n} "
                        "classes", source)
