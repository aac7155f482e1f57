"""Shipped data checked before computing: on a cluster, a failure found after the pass costs the whole
pass. :func:`check_shipped_data` is called once by :func:`evaluate.run.run_plan`, before any model is
loaded: the data files shipped with the package load (the ImageNet-1k class list, and the ImageNet-ReaL
labels when the images are ILSVRC2012 validation files), rather than failing in the report. The ImageNet-A/-R
class lists are read and checked where the label space is chosen (:mod:`evaluate.sources.label_space`), before
this, whenever a 1000-class model might use them.

The output folder is checked by :func:`evaluate.reports.report.check_output` (a real write test from
:mod:`cvt_port.outputs`), the model folder where it is loaded (:mod:`evaluate.models.folders`).
"""

from __future__ import annotations

from typing import Iterable

from cvt_port.errors import BadInput, first_line


def check_shipped_data(image_ids: Iterable[str]) -> None:
    """The shipped data files the report will need load now; a damaged installation is one line."""
    from cvt_port import labels

    from . import real_labels
    from .samples import ilsvrc_val_number

    needed = [(labels.CLASSES_TSV, labels.imagenet_classes)]
    if all(ilsvrc_val_number(i) is not None for i in image_ids):  # ReaL applies (see evaluate.sources.real_labels)
        needed.append((real_labels.REAL_LABELS_JSON, real_labels.load_real_labels))
    for path, load in needed:
        try:
            load()
        except Exception as exc:  # missing, truncated, edited: KeyError, JSONDecodeError, AssertionError...
            raise BadInput(f"{path}: a data file shipped with cvt-port does not load ({type(exc).__name__}: "
                           f"{first_line(exc, 150)}); reinstall cvt-port") from None
