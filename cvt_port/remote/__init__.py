"""Code that travels with every converted folder (``auto_map`` in its config files).

Each module here is self-contained (it imports only transformers, torch, PIL, numpy and the standard
library) because ``trust_remote_code=True`` loads the folder's copy as a lone file. The package imports
the very same modules (``cvt_port.hf``, ``evaluate.pixels.preprocess``): one implementation, two ways in.
:data:`REMOTE_FILES` names the files :func:`cvt_port.conversion.convert` copies into a folder;
:func:`is_package_copy` tells whether a folder's copies are byte for byte the package's own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELING_FILE = "modeling_cvt_port.py"
PROCESSING_FILE = "image_processing_cvt_port.py"
REMOTE_FILES = (MODELING_FILE, PROCESSING_FILE)

MODEL_AUTO_MAP = {"AutoModelForImageClassification": "modeling_cvt_port.CvtPortForImageClassification"}
PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing_cvt_port.CvtPortImageProcessor"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def package_hashes() -> dict[str, str]:
    """sha256 of each remote-code file as this package ships it."""
    return {name: sha256(HERE / name) for name in REMOTE_FILES}


def is_package_copy(folder: str | Path) -> bool:
    """True when ``folder`` holds every remote-code file and each is byte for byte the package's own,
    so the package's classes can serve it without running the folder's copy."""
    folder = Path(folder)
    ours = package_hashes()
    return all((folder / name).is_file() and sha256(folder / name) == digest for name, digest in ours.items())
