"""The images of a run, from the plan's :class:`~evaluate.plan.DataSpec`.

A bad data path, labels file or subset is found here, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvt_port.variants import Variant

from .class_labels import stated_numbering
from .layouts import discover
from .samples import DataSource, Sample
from ..models.folders import LoadedFolder
from ..plan import DataSpec, PlanError
from .subset import read_subset_file, select_subset


@dataclass
class Inputs:
    """The data source, the images chosen from it (in evaluation order), whether that is a subset, and the classes
    present in the whole source (before any subset: what ``data.label_space data`` scores over)."""

    source: DataSource
    samples: list[Sample]
    is_subset: bool
    data_classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.data_classes:
            self.data_classes = tuple(sorted({s.label for s in self.source.samples}))


def prepare_data(spec: DataSpec, label2id: dict[str, int] | None, classes: int = 0) -> Inputs:
    """Discover the layout and choose the images; ``label2id`` maps folder names that are the model's labels;
    with ``classes`` (the model's number of outputs; 0: not known), every label is checked to be one."""
    if spec.streaming:
        from .streaming import discover_streaming

        if spec.labels_file is not None:
            raise PlanError("data.labels_file", "not used with data.streaming (labels come from the dataset)")
        source = discover_streaming(str(spec.source), split=spec.split, label2id=label2id,
                                    image_column=spec.image_column, label_column=spec.label_column,
                                    numbering=stated_numbering(spec.label_numbering, spec.devkit_map),
                                    revision=spec.revision)
    else:
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
