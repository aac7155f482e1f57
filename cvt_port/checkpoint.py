"""Reading an original checkpoint safely, and reading the architecture off its weights.

Loading never runs code (``weights_only=True``) and is lazy (``mmap=True``): a 1.1 GB CvT-W24
file is paged in from disk as it is used rather than copied into memory.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import BadInput, first_line
from .variants import Architecture, Variant

_NOT_CVT = "does not look like an original CvT checkpoint"


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The plain state dict of a release file (also under "state_dict"/"model", or "module."-prefixed)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file; give the path of an original CvT .pth checkpoint")
    if not path.is_file():
        raise BadInput(f"{path}: is not a file; give the path of an original CvT .pth checkpoint")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty; download the checkpoint again")
    obj = _torch_load(path)
    return _unwrap(path, obj)


def _torch_load(path: Path):
    zipped = zipfile.is_zipfile(path)
    try:
        # mmap needs the zip format (torch >= 1.6); older files are read whole. torch warns about what it
        # meets in a file it then refuses (e.g. "Detected pickle protocol 4"): our one line says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg:
            m = re.search(r"(Unsupported global: GLOBAL [^\s]+|Unsupported operand \d+|[A-Za-z_]+ is not supported)", msg)
            what = f" ({m.group(1)})" if m else ""
            raise BadInput(
                f"{path}: refused to load: the file holds objects other than tensors{what}; "
                "a checkpoint must be a plain state dict (nothing in it was run)"
            ) from None
        raise BadInput(f"{path}: is not a PyTorch checkpoint ({first_line(msg, 200)})") from None
    except Exception as exc:  # junk makes the unpickler fail in many ways: all are bad input
        reason = first_line(exc, 200).split(". ")[0]  # torch's zip errors run on in further sentences
        if zipped or "zip" in reason.lower() or isinstance(exc, EOFError):
            raise BadInput(
                f"{path}: is truncated or damaged ({reason}); download the checkpoint again"
            ) from None
        raise BadInput(f"{path}: is not a PyTorch checkpoint ({reason})") from None


def _unwrap(path: Path, obj) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise BadInput(f"{path}: {_NOT_CVT} (it holds a {type(obj).__name__}, not a state dict)")
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise BadInput(f"{path}: {_NOT_CVT} (entry '{bad[0]}' is not a tensor)")
    return obj


@dataclass(frozen=True)
class WeightsShape:
    """What the weights themselves say about the architecture (heads cannot be read off them)."""

    depth: tuple[int, ...]
    embed_dim: tuple[int, ...]
    num_classes: int
    cls_token: tuple[bool, ...]
    in_chans: int

    def differences(self, arch: Architecture) -> list[str]:
        out = []
        for field in ("depth", "embed_dim", "num_classes", "cls_token", "in_chans"):
            mine, theirs = getattr(self, field), getattr(arch, field)
            if isinstance(theirs, tuple):
                theirs = tuple(theirs)
            if mine != theirs:
                out.append(f"{field} {list(mine) if isinstance(mine, tuple) else mine} in the weights, "
                           f"{list(theirs) if isinstance(theirs, tuple) else theirs} in the config")
        return out


def infer_shape(path: Path, sd: dict[str, torch.Tensor]) -> WeightsShape:
    """Depth per stage, widths, classes and class tokens, read from key names and shapes."""
    stages = sorted({int(m.group(1)) for k in sd if (m := re.match(r"stage(\d+)\.patch_embed\.proj\.weight$", k))})
    if not stages or "head.weight" not in sd:
        missing = "stage0.patch_embed.proj.weight" if not stages else "head.weight"
        first = ", ".join(list(sd)[:3])
        raise BadInput(f"{path}: {_NOT_CVT} (no '{missing}'; first keys: {first})")
    if stages != list(range(len(stages))):
        raise BadInput(f"{path}: {_NOT_CVT} (stages {stages} are not numbered 0..n-1)")
    depth = []
    for i in stages:
        blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"stage{i}\.blocks\.(\d+)\.", k))}
        depth.append(max(blocks) + 1 if blocks else 0)
    embed = tuple(int(sd[f"stage{i}.patch_embed.proj.weight"].shape[0]) for i in stages)
    return WeightsShape(
        depth=tuple(depth),
        embed_dim=embed,
        num_classes=int(sd["head.weight"].shape[0]),
        cls_token=tuple(f"stage{i}.cls_token" in sd for i in stages),
        in_chans=int(sd["stage0.patch_embed.proj.weight"].shape[1]),
    )


def choose_variant(path: Path, shape: WeightsShape, variants: dict[str, Variant], requested: Variant | None) -> Variant:
    """The requested variant, checked against the weights; or the one the weights and file name imply."""
    if requested is not None:
        diff = shape.differences(requested.architecture)
        if diff:
            raise BadInput(f"{path}: --variant {requested.name} disagrees with the weights: {'; '.join(diff)}")
        return requested
    by_file = [v for v in variants.values() if v.release_file and v.release_file.lower() == path.name.lower()]
    if by_file:
        return choose_variant(path, shape, variants, by_file[0])
    fits = [v for v in variants.values() if not shape.differences(v.architecture)]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise BadInput(
            f"{path}: no variant in configs/ has depth {list(shape.depth)} and widths {list(shape.embed_dim)} "
            f"with {shape.num_classes} classes; add a config or pass --variant PATH.yaml"
        )
    names = ", ".join(sorted(v.name for v in fits))
    raise BadInput(
        f"{path}: the weights fit several variants that differ only in evaluation size ({names}); "
        "pass --variant NAME"
    )
