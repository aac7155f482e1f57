"""Variant table: one YAML file per released checkpoint in the repository's top-level ``configs/`` folder.

Each file is the single source of truth for a variant (architecture, evaluation
preprocessing, release file name, Hub name, reference accuracy and gate tolerances).
Both ``cvt_port`` and ``evaluate`` read variants through this module only.

A file is typed and range-checked as it is loaded (:func:`load_variant_file`): a value that
would fail an hour into an evaluation (``top1_tolerance: lots``), be silently misread
(``crop_pct: "0.875"``) or crash deep inside a library (``interpolation: bicubik``) is a
one-line :class:`BadInput` naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import BadInput

# What ``preprocessing.interpolation`` may name, with PIL's resample codes (Image.Resampling values,
# which Hugging Face image processors take as ``resample``).
INTERPOLATIONS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
# What ``preprocessing.resize`` may name: the 224 models' rule (shorter side to img_size / crop_pct, then a
# centre crop) and the 384 models' rule (warp to img_size x img_size).
RESIZE_RULES = ("shorter_side_then_center_crop", "warp")
# The reference implementation computes QuickGELU (what the releases were trained with), so that is the one
# activation a config can record.
ACTIVATIONS = ("quick_gelu",)


def _configs_dir() -> Path:
    """The variant files are written once, in the repository's top-level ``configs/``. An installed wheel
    carries them as package data at ``cvt_port/configs/`` (pyproject maps the folder there); a checkout
    (editable install, or the source tree on the path) reads the top-level folder itself."""
    here = Path(__file__).resolve().parent
    packaged = here / "configs"
    return packaged if packaged.is_dir() else here.parent / "configs"


CONFIGS_DIR = _configs_dir()
TESTING_CONFIGS_DIR = CONFIGS_DIR / "testing"  # tiny variants for tests and benchmarks; never inferred


@dataclass(frozen=True)
class Architecture:
    depth: tuple[int, ...]
    num_heads: tuple[int, ...]
    embed_dim: tuple[int, ...]
    patch_sizes: tuple[int, ...] = (7, 3, 3)
    patch_stride: tuple[int, ...] = (4, 2, 2)
    patch_padding: tuple[int, ...] = (2, 1, 1)
    mlp_ratio: float = 4.0
    cls_token: tuple[bool, ...] = (False, False, True)
    num_classes: int = 1000
    in_chans: int = 3
    activation: str = "quick_gelu"

    @property
    def num_stages(self) -> int:
        return len(self.depth)


@dataclass(frozen=True)
class Preprocessing:
    img_size: int
    resize: str  # one of RESIZE_RULES
    crop_pct: float
    interpolation: str  # one of INTERPOLATIONS
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Variant:
    name: str
    architecture: Architecture
    preprocessing: Preprocessing
    release_file: str | None = None
    hub_id: str | None = None
    pretrained_on: str | None = None
    labels: Any = "imagenet-1k"  # "imagenet-1k" or an explicit list of class names
    reference: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)  # as the file says it; evaluate.verdict.gate_settings adds the defaults
    path: Path | None = None

    @property
    def reference_top1(self) -> float | None:
        return self.reference.get("top1")

    def class_names(self) -> list[str]:
        """Class names in class-index order (ImageNet-1k from the project's copy of the list)."""
        if self.labels == "imagenet-1k":
            from .labels import imagenet_class_names

            return imagenet_class_names()
        if isinstance(self.labels, list):
            return [str(x) for x in self.labels]
        raise BadInput(f"{self.path}: 'labels' must be 'imagenet-1k' or a list of class names")


# --------------------------------------------------------------------------- checking a file


def _show(value) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else text[:77] + "..."


class _FileChecker:
    """Typed, range-checked reads of one parsed YAML document; every failure is one BadInput line."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, value, allowed: str):
        raise BadInput(f"{self.path}: key '{key}' = {_show(value)}: must be {allowed}")

    def section(self, doc: dict, name: str, allowed: tuple[str, ...], required: tuple[str, ...] = (),
                optional_section: bool = False) -> dict:
        value = doc.get(name)
        if value is None and optional_section:
            return {}
        if not isinstance(value, dict):
            if name not in doc:
                raise BadInput(f"{self.path}: section '{name}' is missing (keys: {', '.join(allowed)})")
            self.fail(name, value, f"a mapping of {', '.join(allowed)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise BadInput(f"{self.path}: unknown key '{name}.{unknown[0]}'; allowed in '{name}': {', '.join(allowed)}")
        missing = [k for k in required if k not in value]
        if missing:
            raise BadInput(f"{self.path}: key '{name}.{missing[0]}' is missing")
        return value

    @staticmethod
    def _is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    @staticmethod
    def _is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(self, key: str, value, minimum: int) -> int:
        if not self._is_int(value) or value < minimum:
            self.fail(key, value, f"an integer >= {minimum}")
        return value

    def number(self, key: str, value, allowed: str, ok) -> float:
        if not self._is_number(value) or not ok(value):
            self.fail(key, value, allowed)
        return float(value)

    def text(self, key: str, value, nullable: bool = True) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(key, value, "a non-empty string" + (" or null" if nullable else ""))
        return value

    def choice(self, key: str, value, choices) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(key, value, "one of " + ", ".join(choices))
        return value

    def int_list(self, key: str, value, length: int | None, minimum: int, what: str) -> tuple[int, ...]:
        count = "one per stage" if length is None else f"{length} of them, one per stage"
        allowed = f"a list of integers >= {minimum} ({what}; {count})"
        if not isinstance(value, (list, tuple)) or not value or (length is not None and len(value) != length):
            self.fail(key, value, allowed)
        if not all(self._is_int(v) and v >= minimum for v in value):
            self.fail(key, value, allowed)
        return tuple(value)


_ARCH_KEYS = tuple(Architecture.__dataclass_fields__)
_PRE_KEYS = tuple(Preprocessing.__dataclass_fields__)
_TOP_KEYS = ("name", "release_file", "hub_id", "pretrained_on", "architecture", "preprocessing", "labels",
             "reference", "gate")
_REFERENCE_KEYS = ("top1", "top5", "source", "dataset", "num_samples")

def _architecture(c: _FileChecker, doc: dict) -> Architecture:
    a = c.section(doc, "architecture", _ARCH_KEYS, required=("depth", "num_heads", "embed_dim"))
    default = Architecture(depth=(1,), num_heads=(1,), embed_dim=(1,))
    depth = c.int_list("architecture.depth", a["depth"], None, 1, "blocks")
    n = len(depth)
    heads = c.int_list("architecture.num_heads", a["num_heads"], n, 1, "attention heads")
    dims = c.int_list("architecture.embed_dim", a["embed_dim"], n, 1, "widths")
    if any(d % h for d, h in zip(dims, heads)):
        c.fail("architecture.embed_dim", dims, f"divisible by num_heads {list(heads)} stage by stage")

    def per_stage(key: str, minimum: int, what: str) -> tuple[int, ...]:
        return c.int_list(f"architecture.{key}", a.get(key, getattr(default, key)), n, minimum, what)

    cls = a.get("cls_token", default.cls_token)
    if not isinstance(cls, (list, tuple)) or len(cls) != n or not all(isinstance(v, bool) for v in cls):
        c.fail("architecture.cls_token", cls, f"a list of {n} booleans (true/false), one per stage")
    return Architecture(
        depth=depth,
        num_heads=heads,
        embed_dim=dims,
        patch_sizes=per_stage("patch_sizes", 1, "convolution kernel sizes"),
        patch_stride=per_stage("patch_stride", 1, "convolution strides"),
        patch_padding=per_stage("patch_padding", 0, "convolution paddings"),
        mlp_ratio=c.number("architecture.mlp_ratio", a.get("mlp_ratio", default.mlp_ratio), "a number > 0",
                           lambda v: v > 0),
        cls_token=tuple(cls),
        num_classes=c.integer("architecture.num_classes", a.get("num_classes", default.num_classes), 1),
        in_chans=c.integer("architecture.in_chans", a.get("in_chans", default.in_chans), 1),
        activation=c.choice("architecture.activation", a.get("activation", default.activation), ACTIVATIONS),
    )


def _triple(c: _FileChecker, key: str, value, positive: bool) -> tuple[float, float, float]:
    allowed = f"a list of 3 numbers{' > 0' if positive else ''} (one per RGB channel)"
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        c.fail(key, value, allowed)
    if not all(c._is_number(v) and (v > 0 or not positive) for v in value):
        c.fail(key, value, allowed)
    return tuple(float(v) for v in value)


def _preprocessing(c: _FileChecker, doc: dict) -> Preprocessing:
    p = c.section(doc, "preprocessing", _PRE_KEYS, required=_PRE_KEYS)
    return Preprocessing(
        img_size=c.integer("preprocessing.img_size", p["img_size"], 1),
        resize=c.choice("preprocessing.resize", p["resize"], RESIZE_RULES),
        crop_pct=c.number("preprocessing.crop_pct", p["crop_pct"], "a number in (0, 1]", lambda v: 0 < v <= 1),
        interpolation=c.choice("preprocessing.interpolation", p["interpolation"], tuple(INTERPOLATIONS)),
        mean=_triple(c, "preprocessing.mean", p["mean"], positive=False),
        std=_triple(c, "preprocessing.std", p["std"], positive=True),
    )


def _labels(c: _FileChecker, doc: dict, num_classes: int):
    labels = doc.get("labels", "imagenet-1k")
    if labels == "imagenet-1k":
        if num_classes != 1000:
            c.fail("labels", labels, f"a list of {num_classes} class names: 'imagenet-1k' names 1000 classes, "
                                     f"architecture.num_classes is {num_classes}")
        return labels
    allowed = f"'imagenet-1k' or a list of {num_classes} distinct class names (architecture.num_classes)"
    if not isinstance(labels, list) or len(labels) != num_classes:
        c.fail("labels", labels, allowed)
    if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in labels):
        c.fail("labels", labels, allowed)
    if len({str(x) for x in labels}) != len(labels):
        c.fail("labels", labels, allowed)
    return list(labels)


def _reference(c: _FileChecker, doc: dict) -> dict:
    r = c.section(doc, "reference", _REFERENCE_KEYS, optional_section=True)
    for key in ("top1", "top5"):
        if r.get(key) is not None:
            c.number(f"reference.{key}", r[key], "a top-1/top-5 accuracy in percent, 0 to 100, or null",
                     lambda v: 0 <= v <= 100)
    for key in ("source", "dataset"):
        c.text(f"reference.{key}", r.get(key))
    if r.get("num_samples") is not None:
        c.integer("reference.num_samples", r["num_samples"], 1)
    return dict(r)


# What a file may say under ``gate:`` (what applies when it says nothing is the gate's business:
# evaluate.verdict.gate_settings, the defaults' one home), and what a gate setting may be: the bounds within which a
# gate still means what docs/gate.md promises ("What no setting lowers", with the figures behind them). Past them a check passes models it cannot tell
# apart from a regression: a 50-point "detectable drop" lets 7 images pass the paired checks, a tolerance of 2 points
# passes CvT-13 for CvT-21 (0.9 points or more between any two releases), power 0.5 is a coin toss.
GATE_BOUNDS = {
    "top1_tolerance": ("a number of top-1 points from 0 to 1 (released variants are 0.9 points or more apart)",
                       lambda v: 0 <= v <= 1),
    "min_agreement": ("a fraction from 0.99 to 1 (0.999 = 99.9% of images)", lambda v: 0.99 <= v <= 1),
    "detectable_drop": ("a number of top-1 points > 0 and <= 5", lambda v: 0 < v <= 5),
    "baseline_top1_tolerance": ("a number of top-1 points from 0 to 1", lambda v: 0 <= v <= 1),
    "baseline_max_flipped": ("a fraction of the images from 0 to 0.01 (0.001 = 0.1% may change their top-1)",
                             lambda v: 0 <= v <= 0.01),
    "power": ("a probability from 0.9 to 1, exclusive (0.99: a check fails a model detectable_drop points worse 99 "
              "times in 100)", lambda v: 0.9 <= v < 1),
    "alpha": ("a probability > 0 and <= 0.05 (0.01: the recorded-top-1 check's interval is at 99% confidence)",
              lambda v: 0 < v <= 0.05),
}
GATE_KEYS = tuple(GATE_BOUNDS)


def _gate(c: _FileChecker, doc: dict) -> dict:
    g = c.section(doc, "gate", GATE_KEYS, optional_section=True)
    for key, (allowed, ok) in GATE_BOUNDS.items():
        if key in g:
            c.number(f"gate.{key}", g[key], allowed, ok)
    return dict(g)


def read_gate_section(where, doc: dict) -> dict:
    """``doc``'s ``gate:`` section, typed and range-checked as a variant file's (a suite file's set has one too);
    ``where`` names the file (and the set) in the one-line error."""
    return _gate(_FileChecker(where), doc)


def read_yaml(path: Path):
    """A YAML file's document; a one-line :class:`BadInput` naming the file when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise BadInput(f"{path}: not valid YAML ({problem}{where})") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def read_yaml_mapping(path: Path, keys: tuple[str, ...], what: str) -> dict:
    """A YAML file that must be a mapping of these top-level ``keys`` (a variant config, a suite file): its
    document, or a one-line :class:`BadInput` naming the file and the first unknown key."""
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: not {what} (a YAML mapping with the keys {', '.join(keys)})")
    unknown = sorted(str(k) for k in doc if k not in keys)
    if unknown:
        raise BadInput(f"{path}: unknown key '{unknown[0]}'; allowed: {', '.join(keys)}")
    return doc


def load_variant_file(path: str | Path) -> Variant:
    """Read one variant YAML file, every key typed and range-checked: a bad file is a one-line
    :class:`BadInput` naming the file, the key, the value and what is allowed."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: variant config not found (see {CONFIGS_DIR} for the known variants)")
    doc = read_yaml_mapping(path, _TOP_KEYS, "a variant config")
    c = _FileChecker(path)
    if "name" not in doc:
        raise BadInput(f"{path}: key 'name' is missing")
    architecture = _architecture(c, doc)
    return Variant(
        name=c.text("name", doc["name"], nullable=False),
        architecture=architecture,
        preprocessing=_preprocessing(c, doc),
        release_file=c.text("release_file", doc.get("release_file")),
        hub_id=c.text("hub_id", doc.get("hub_id")),
        pretrained_on=c.text("pretrained_on", doc.get("pretrained_on")),
        labels=_labels(c, doc, architecture.num_classes),
        reference=_reference(c, doc),
        gate=_gate(c, doc),
        path=path,
    )


def variant_files() -> list[Path]:
    return sorted(CONFIGS_DIR.glob("*.yaml"))


def all_variants() -> dict[str, Variant]:
    return {v.name: v for v in map(load_variant_file, variant_files())}


def release_variants() -> dict[str, Variant]:
    """The seven released checkpoints (variants that name a release file)."""
    return {k: v for k, v in all_variants().items() if v.release_file}


def get_variant(name_or_path: str | Path) -> Variant:
    """A variant by name (``cvt-13-224``), release file name, or path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return load_variant_file(p)
    variants = all_variants()
    if str(name_or_path) in variants:
        return variants[str(name_or_path)]
    for v in variants.values():
        if v.release_file and v.release_file.lower() == p.name.lower():
            return v
    raise BadInput(f"unknown variant '{name_or_path}': choose one of {', '.join(sorted(variants))} or a YAML path")
