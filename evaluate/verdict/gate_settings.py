"""The release gate's settings, with their defaults: one home for what the gate applies when a variant file's
``gate`` section leaves a key out.

Why here and not in :mod:`cvt_port.variants`: a default is part of the gate's rule (what "close enough" and "able
to see a regression" mean), not of the file format. The variant loader checks what a file *may say* under
``gate:`` (the keys :data:`cvt_port.variants.GATE_KEYS`, each typed and range-checked as the file is read, so a bad
value is found before any pass); this module says what applies when the file *says nothing*. The bundled
model's generated config writes these values too (:mod:`evaluate.bundled.build`).

The defaults:

* ``top1_tolerance`` 0.1 top-1 points: the converted model may differ from the original (or from the recorded
  figure on the full set) by this much.
* ``min_agreement`` 0.999: the fraction of images on which converted and original must agree on top-1.
* ``detectable_drop`` 1.0 top-1 points: the regression a check must be able to detect to be made at all.
* ``power`` 0.99 and ``alpha`` 0.01: a check "can detect" a regression when it fails a model that far below with
  probability ``power``; the recorded-top-1 check's interval is at confidence ``1 - alpha``. At CvT-13's 81.6%, a
  one-point drop needs 36,788 images at these values (9,962 would be a coin toss: power 0.5).
* Against an earlier run of the same weights (``--baseline``) the same budgets as a conversion's: a new
  environment (torch, transformers, CUDA, bf16, sdpa, compile, a node type) may cost no more top-1 than converting
  may (``baseline_top1_tolerance`` = ``top1_tolerance``) and change no more top-1 predictions than the converted
  model may differ from the original on (``baseline_max_flipped`` = 1 - ``min_agreement`` = 0.1% of the images: 50
  of ImageNet's 50,000; on fewer than 1,000 images none may change). A swapped pair of head rows, a wrong
  preprocessing or a broken kernel changes far more; a pass that must tolerate more says so in its variant file.

What a setting may be is bounded (:data:`cvt_port.variants.GATE_BOUNDS`: ``detectable_drop`` at most 5 points,
``power`` at least 0.9, ``alpha`` at most 0.05, tolerances at most 1 point, ``min_agreement`` at least 0.99), checked
wherever a setting comes in (a variant file, a suite set, ``data.gate``: :func:`check_data_gate`), and no setting
lowers :data:`MIN_IMAGES_TO_PASS` (docs/gate.md, "What no setting lowers").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from cvt_port.variants import read_gate_section

from ..plan import PlanError

# No pass, of any check, on fewer images, with any setting, on a subset or a set a config calls full (docs/gate.md,
# "What no setting lowers"). Below 100 images one image is more than a point of top-1, more than the largest
# tolerance a setting may give (1 point, cvt_port.variants.GATE_BOUNDS): a check could then only tell "no image
# changed" from "too many". The power rule asks far more at the defaults (36,788 images at 81.6%), but within the
# bounds it alone would pass 45 images on the paired checks (detectable_drop 5, power 0.9) and 63 on the
# recorded-top-1 check of a 99.7% model (alpha 0.05). The 99% interval of 81.6% at 1 image: [13.1, 100]; 10 images:
# [40.1, 96.0]; 100 images: [70.2, 89.8].
MIN_IMAGES_TO_PASS = 100


@dataclass(frozen=True)
class GateSettings:
    """The gate's thresholds for one variant (its file's ``gate`` section over these defaults)."""

    top1_tolerance: float = 0.1  # top-1 points
    min_agreement: float = 0.999  # fraction of images
    detectable_drop: float = 1.0  # top-1 points
    baseline_top1_tolerance: float = 0.1  # top-1 points this run may lose against the baseline
    baseline_max_flipped: float = 0.001  # fraction of images whose top-1 may change since the baseline
    power: float = 0.99  # probability that a check fails a model detectable_drop points worse
    alpha: float = 0.01  # the recorded-top-1 check's interval is at confidence 1 - alpha

    @property
    def confidence(self) -> float:
        return 1 - self.alpha


DEFAULTS = GateSettings()
SETTING_NAMES = tuple(f.name for f in fields(GateSettings))


def gate_settings(variant) -> GateSettings:
    """The settings for ``variant`` (a :class:`cvt_port.variants.Variant`, or None for a plain Hugging Face folder:
    the defaults). The file's values were checked when it was read, against :data:`cvt_port.variants.GATE_BOUNDS`
    (every way in reads a file, a suite's set or ``data.gate``; a Variant made in code, as the tests' unit checks of the
    statistics make, is not checked again)."""
    given = getattr(variant, "gate", None) or {}
    return GateSettings(**{k: float(v) for k, v in given.items() if k in SETTING_NAMES})


def check_data_gate(gate: tuple[tuple[str, float | str | None], ...]) -> dict:
    """A data set's own gate (``DataSpec.gate``) as a mapping: its keys known and its settings within the bounds a
    variant file's are held to, checked before any model is loaded; a one-line error naming ``data.gate``."""
    given = dict(gate)
    unknown = sorted(k for k in given if k not in (*SETTING_NAMES, *DATA_KEYS))
    if unknown:
        raise PlanError("data.gate", f"no gate setting {unknown[0]!r}; choose from {', '.join(DATA_KEYS)}, "
                        f"{', '.join(SETTING_NAMES)}")
    read_gate_section("data.gate", {"gate": {k: v for k, v in given.items() if k in SETTING_NAMES}})
    return given


GIVEN_WITH_DATA = "given with the data"  # reference.dataset of a figure the data's own gate gave
DATA_KEYS = ("recorded_top1", "recorded_images", "recorded_in")  # what a data set's gate says beside the settings


def for_data(variant, gate: tuple[tuple[str, float | None], ...]):
    """The variant as the gate reads it on this data (``DataSpec.gate``, a suite file's set): the data's own
    recorded top-1 replaces the variant's (None: none recorded on it), with the images it was measured on
    (``recorded_images``; without it the figure is judged as a sample's, never as the full set's), and the data's
    gate settings override the variant file's. No gate of its own: the variant unchanged."""
    if not gate:
        return variant
    given = check_data_gate(gate)
    if variant is None:
        raise PlanError("data.gate", "a data set's own gate needs the model's variant; give models.config")
    reference = dict(variant.reference)
    if "recorded_top1" in given:  # a figure of other data: the variant's own facts about its set do not apply
        reference = {"top1": given["recorded_top1"], "dataset": GIVEN_WITH_DATA,
                     "source": str(given.get("recorded_in") or "the data's own gate (data.gate)")}
        if given.get("recorded_images") is not None:
            reference["num_samples"] = int(given["recorded_images"])
    settings = {**variant.gate, **{k: v for k, v in given.items() if k in SETTING_NAMES}}
    return dataclasses.replace(variant, reference=reference, gate=settings)
