"""The images of a run and how they are preprocessed, from the plan's :class:`~evaluate.plan.DataSpec`.

A bad data path, labels file or subset is found here, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvt_port.hf import quiet_transformers
from cvt_port.variants import Variant

from .class_labels import stated_numbering
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


def build_transforms(modes: tuple[Mode, ...], variant: Variant | None, folder: LoadedFolder,
                     trust_remote_code: bool = False) -> dict:
    """One transform per preprocessing mode, keyed by the mode's name ("release", "hf").

    "hf" is the folder's image processor as a stock user gets it: ``AutoImageProcessor`` without remote
    code (for a converted folder, transformers' ConvNeXt/ViT processor). With ``trust_remote_code`` the
    folder's own processor (``auto_map``) is used; for a folder cvt_port wrote (its files' hashes are the
    package's) that is cvt_port's own class, and the folder's copy is not run."""
    transforms = {}
    for mode in modes:
        if mode is Mode.RELEASE:
            if variant is None:
                raise PlanError("models.config", f"{folder.source} records no cvt_port variant: name the variant "
                                "(or use preprocessing hf to run the folder's own image processor)")
            transforms[mode.value] = ReleaseTransform(variant.preprocessing)
        else:
            transforms[mode.value] = HFTransform(*folder_processor(folder, trust_remote_code))
    return transforms


def folder_processor(folder: LoadedFolder, trust_remote_code: bool) -> tuple:
    """(image processor, where its code came from: "transformers", "cvt_port" or "model folder")."""
    from transformers import AutoImageProcessor

    from cvt_port.hf import CvtPortImageProcessor
    from cvt_port.remote import is_package_copy

    try:
        with quiet_transformers():
            if trust_remote_code and folder.is_local and is_package_copy(folder.source):
                return CvtPortImageProcessor.from_pretrained(folder.source), "cvt_port"
            proc = AutoImageProcessor.from_pretrained(folder.source, trust_remote_code=trust_remote_code)
    except Exception as exc:
        hint = ("; it needs its own code: pass --trust-remote-code if you trust it, or use preprocessing release"
                if not trust_remote_code and _has_remote_processor(folder) else "; use preprocessing release")
        raise PlanError("data.preprocessing", f"{folder.source} has no usable image processor "
                        f"({type(exc).__name__}){hint}", "hf") from None
    from_folder = not type(proc).__module__.startswith("transformers.")
    return proc, "model folder" if from_folder else "transformers"


def _has_remote_processor(folder: LoadedFolder) -> bool:
    import json
    from pathlib import Path

    path = Path(folder.source) / "preprocessor_config.json"
    try:
        return folder.is_local and "AutoImageProcessor" in json.loads(path.read_text()).get("auto_map", {})
    except (OSError, ValueError, AttributeError):
        return False


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
