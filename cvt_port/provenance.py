"""Where a result came from: the versions of Python and of the libraries that computed it, the package and
its commit, the command, the time, and the weights (their sha256, the original file's, the Hub revision).

Every record cvt-port writes (``conversion.json``, ``report.json``, a cache's manifest) says which
versions produced it, so a figure that changes between machines can be traced to a library. This
module is the one place that reads them. What the run itself decided (devices, world size, precision,
attention, compile, the image processor) is recorded where the run decides it (``report.json``'s
top-level keys and ``hardware``); :data:`ENVIRONMENT_KEYS` names them for comparisons between runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import subprocess
import sys
from pathlib import Path

_MODULES = {"pillow": "PIL"}  # distribution name -> module name, where they differ

# The libraries a report names: the ones that compute (torch, transformers, lightning, torchmetrics), read the data
# (datasets, pillow, numpy) or fetch models (huggingface_hub).
LIBRARIES = ("torch", "transformers", "lightning", "torchmetrics", "datasets", "huggingface_hub", "pillow", "numpy")

# report.json keys that describe the environment of a run (not its results): what a comparison of two runs lists
# when it differs. Nested mappings are compared key by key.
ENVIRONMENT_KEYS = ("versions", "hardware", "devices", "world_size", "cluster_environment", "precision", "attention",
                    "compile", "numerics", "preprocessing", "image_processor", "cache")

PACKAGE_DIR = Path(__file__).resolve().parent


def library_versions(*libraries: str) -> dict[str, str]:
    """``{"python": ..., library: version, ...}`` for the named libraries: an imported library's ``__version__``
    (the code that ran, not whatever metadata an environment carries); one the process has not imported (a run
    on an image folder never imports ``datasets``, 0.5 s) is read from its installed metadata instead, or
    imported when it has none."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for name in libraries:
        module = _MODULES.get(name, name)
        if module not in sys.modules:
            try:
                versions[name] = version(name)
                continue
            except PackageNotFoundError:
                pass
        versions[name] = str(importlib.import_module(module).__version__)
    return versions


def package_version() -> str:
    """cvt-port's installed version (``importlib.metadata``); ``0+unknown`` for a source tree never installed."""
    try:
        from importlib.metadata import version

        return version("cvt-port")
    except Exception:  # noqa: BLE001 - not installed
        return "0+unknown"


def git_commit(package_dir: Path = PACKAGE_DIR) -> dict | None:
    """``{"commit", "dirty"}`` when the running ``cvt_port`` is a git checkout's own folder (an editable install or
    the source tree), else None, silently: a wheel installed in a venv that happens to sit inside some checkout is
    not that checkout's code (the checkout's top level must hold this very folder)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    lines = (git("rev-parse", "--show-toplevel", "HEAD") or "").split()
    if len(lines) != 2 or Path(lines[0]).resolve() / package_dir.name != package_dir.resolve():
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": lines[1], "dirty": bool(status.strip()) if status is not None else None}


def utc_now() -> str:
    """The current time, UTC, ISO 8601 to the second (``2026-11-30T07:31:22+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def cuda_driver_version() -> str | None:
    """The NVIDIA kernel driver's version (``/proc/driver/nvidia/version`` on Linux), else None."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text(errors="replace")
    except OSError:
        return None
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return word
    return None


def sha256_of(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def hub_revision(repo_id: str) -> str | None:
    """The commit of a Hub repository's snapshot that was loaded (read from the local Hub cache, where loading put
    it: ``.../snapshots/<commit>/config.json``), or None when it is not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - not a repo id huggingface_hub accepts
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def weights_provenance(model: str, is_local: bool, conversion: dict | None) -> dict:
    """What was evaluated: the weight file and its sha256 (read now: the bytes that ran, not a recorded figure), the
    original release file and sha256 cvt_port recorded when it converted the folder (``conversion.json``), and for a
    Hub id the repository and the snapshot's commit (None for a local folder)."""
    folder, revision = (Path(model), None) if is_local else (None, hub_revision(model))
    if folder is None and revision is not None:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(model, "config.json")
        folder = Path(config).parent if isinstance(config, str) else None
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None) if folder else None
    source = (conversion or {}).get("source") or {}
    return {
        "file": weights.name if weights else None,
        "sha256": sha256_of(weights) if weights else None,
        "original_file": source.get("file"),
        "original_sha256": source.get("sha256"),
        "converted_by": (conversion or {}).get("cvt_port_version"),
        "hub_id": None if is_local else model,
        "hub_revision": revision,
    }


def run_provenance(command: str | None, started: str, weights: dict) -> dict:
    """report.json's ``provenance``: the command, when it started, the package (version, git commit) and weights."""
    return {"command": command, "started_utc": started,
            "cvt_port": {"version": package_version(), "git": git_commit()}, "weights": weights}
