"""Checking a whole cache (``python -m evaluate cache verify``): every image's pixels against its CRC-32 and
every small file against its sha256 (:mod:`evaluate.pixels.cache` keeps the format and the readers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cvt_port.errors import BadInput

from .cache_files import CACHE_FORMAT, MANIFEST, REBUILD_HINT, damaged_files, read_manifest, crc32_rows


# --------------------------------------------------------------------------- verifying


@dataclass
class CacheReport:
    """What :func:`verify_cache` found: ``damaged`` lists (image id, pixel file) per image whose
    pixels fail their CRC-32; ``damaged_files`` the small files whose sha256 differs."""

    cache_dir: Path
    count: int
    modes: list[str]
    damaged: list[tuple[str, str]] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.damaged and not self.damaged_files

    def lines(self, limit: int = 20) -> list[str]:
        """One line per finding (at most ``limit`` images), then a summary line."""
        out = [f"damaged file: {self.cache_dir / name} (sha256 differs from {MANIFEST})" for name in self.damaged_files]
        out += [f"damaged: {image_id} in {file}" for image_id, file in self.damaged[:limit]]
        if len(self.damaged) > limit:
            out.append(f"... and {len(self.damaged) - limit} more damaged image(s)")
        state = "intact" if self.intact else (f"DAMAGED: {len(self.damaged)} image(s), {len(self.damaged_files)} "
                                              f"other file(s); {REBUILD_HINT}")
        out.append(f"cache {self.cache_dir}: {self.count} images, modes {', '.join(self.modes)}: {state}")
        return out


def verify_cache(cache_dir: str | Path, chunk: int = 256) -> CacheReport:
    """Check every file of the cache at ``cache_dir`` against its recorded checksums.

    Not a cache (no or an unreadable manifest, another format): :class:`BadInput`. A pixel file
    that cannot be read at all counts every image of it as damaged."""
    cache_dir = Path(cache_dir)
    manifest = read_manifest(cache_dir)
    if manifest.get("format") != CACHE_FORMAT:
        raise BadInput(f"cache {cache_dir}: cache format {manifest.get('format')} (this version reads format "
                       f"{CACHE_FORMAT}); {REBUILD_HINT}")
    n = int(manifest["count"])
    report = CacheReport(cache_dir, n, sorted(manifest["modes"]), damaged_files=damaged_files(cache_dir, manifest))
    try:
        ids = (cache_dir / "image_ids.txt").read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        ids = []
    ids = ids if len(ids) == n else [f"#{i}" for i in range(n)]
    for mode in report.modes:
        info = manifest["modes"][mode]
        try:
            pixels = np.load(cache_dir / info["file"], mmap_mode="r")
            crcs = np.load(cache_dir / info["crc32"])
            if pixels.shape != (n, *info["shape"]) or pixels.dtype != np.uint8 or crcs.shape != (n,):
                raise ValueError("shape")
        except (OSError, ValueError):
            report.damaged += [(i, info["file"]) for i in ids]
            continue
        for start in range(0, n, chunk):
            bad = np.flatnonzero(crc32_rows(pixels[start:start + chunk]) != crcs[start:start + chunk])
            report.damaged += [(ids[start + int(j)], info["file"]) for j in bad]
    return report
