"""Variant table: one YAML file per released checkpoint in the repository's top-level ``configs/`` folder.

Each file is the single source of truth for a variant (architecture, evaluation
preprocessing, release file name, Hub name, reference accuracy and gate tolerances).
Both ``cvt_port`` and ``evaluate`` read variants through this module only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import BadInput



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
    resize: str  # "shorter_side_then_center_crop" (224 models) or "warp" (384 models)
    crop_pct: float
    interpolation: str
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
    gate: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def reference_top1(self) -> float | None:
        return self.reference.get("top1")

    @property
    def top1_tolerance(self) -> float:
        return float(self.gate.get("top1_tolerance", 0.1))

    @property
    def min_agreement(self) -> float:
        return float(self.gate.get("min_agreement", 0.999))

    def class_names(self) -> list[str]:
        """Class names in class-index order (ImageNet-1k from the project's copy of the list)."""
        if self.labels == "imagenet-1k":
            from .labels import imagenet_class_names

            return imagenet_class_names()
        if isinstance(self.labels, list):
            return [str(x) for x in self.labels]
        raise BadInput(f"{self.path}: 'labels' must be 'imagenet-1k' or a list of class names")


_ARCH_KEYS = {f for f in Architecture.__dataclass_fields__}
_PRE_KEYS = {f for f in Preprocessing.__dataclass_fields__}


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def load_variant_file(path: str | Path) -> Variant:
    """Read one variant YAML file; a malformed file is a one-line :class:`BadInput`."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: variant config not found (see {CONFIGS_DIR} for the known variants)")
    try:
        doc = yaml.safe_load(path.read_text())
        arch, pre = doc["architecture"], doc["preprocessing"]
        unknown = (set(arch) - _ARCH_KEYS) | (set(pre) - _PRE_KEYS)
        if unknown:
            raise BadInput(f"{path}: unknown keys {sorted(unknown)}")
        return Variant(
            name=doc["name"],
            architecture=Architecture(**_tuples(arch)),
            preprocessing=Preprocessing(**_tuples(pre)),
            release_file=doc.get("release_file"),
            hub_id=doc.get("hub_id"),
            pretrained_on=doc.get("pretrained_on"),
            labels=doc.get("labels", "imagenet-1k"),
            reference=dict(doc.get("reference") or {}),
            gate=dict(doc.get("gate") or {}),
            path=path,
        )
    except BadInput:
        raise
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: not a valid variant config ({type(exc).__name__}: {exc})") from None


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
