"""One transform per preprocessing mode of a job: the release's protocol (from the variant) or the model
folder's image processor, as a stock user of the folder gets it.
"""

from __future__ import annotations

from cvt_port.hf import quiet_transformers
from cvt_port.variants import Variant

from ..models.folders import LoadedFolder
from ..plan import Mode, PlanError
from .preprocess import HFTransform, ReleaseTransform


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
