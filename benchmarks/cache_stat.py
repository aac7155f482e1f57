"""The cache's staleness check on 50,000 files: a stat of every listed image against the cache's record.

Why measured: a run from the pixel cache used to stat 32 probe files only, so an image rewritten in place elsewhere
was served stale (issue 25.6); every file is stat-ed now (:func:`evaluate.pixels.cache_key.source_stamps`, what a
run from the cache and a run that walks both call) and the bytes of 32 probes are hashed again
(:func:`evaluate.pixels.cache_files.changed_content`). This times both on ImageNet-val's size: 50,000 files in 1,000
class folders (empty files: a stat does not read them; the probes are 110 KB, ImageNet's mean JPEG), warm (the
folders just written, as a rerun finds them; a cold cluster file system is slower, and is what the folder times
guard against walking). Side by side: the old 32-probe stat. Target: the full stat well under a second.
``python -m benchmarks.cache_stat`` runs it alone; not in a plain ``python -m benchmarks`` (by name).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import numpy as np

from .report import fr, row, yn
from .timing import fmt, met, median, progress, ratio, target_dict
from .workspace import Workspace

KEY = "7_cache_stat"
NEEDS: tuple[str, ...] = ()
USES_MODEL = False  # files of its own
USES_PHOTOS = False
FILES, FOLDERS, PROBE_BYTES = 50_000, 1_000, 110_000


def _files(ws: Workspace, n: int) -> list:
    """``n`` empty files in ``FOLDERS`` class folders (the tiny mode: fewer), as the cache's samples."""
    from evaluate.sources.samples import Sample

    root = ws.work / "cache-stat"
    folders = min(FOLDERS, max(1, n // 50))
    samples = []
    for i in range(n):
        rel = f"n{i % folders:08d}/ILSVRC2012_val_{i + 1:08d}.JPEG"
        path = root / rel
        if i < folders:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        samples.append(Sample(rel, i % folders, str(path)))
    return samples


def run(ws: Workspace, sections: dict) -> dict:
    from evaluate.pixels.cache_files import PROBES, changed_content, probe_indices
    from evaluate.pixels.cache_key import source_stamps

    n = 2_000 if ws.plan.tiny else FILES
    samples = _files(ws, n)
    probes = probe_indices(n)
    rng = np.random.default_rng(0)
    content = np.zeros((n, 32), dtype=np.uint8)
    for i in probes:  # the probed files hold bytes, as JPEGs do; their hashes are the cache's record
        data = rng.integers(0, 256, PROBE_BYTES, dtype=np.uint8).tobytes()
        with open(samples[i].ref, "wb") as f:
            f.write(data)
        content[i] = np.frombuffer(hashlib.sha256(data).digest(), dtype=np.uint8)
    recorded = source_stamps(samples)
    full, old, hashed = [], [], []
    for _ in range(max(3, ws.plan.repeats)):
        t = time.perf_counter()
        changed = int((source_stamps(samples) != recorded).any(axis=1).sum())
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in probes:  # the check before issue 25.6: the probes' stamps only
            st = os.stat(samples[i].ref)
            _ = (st.st_size, st.st_mtime_ns)
        old.append(time.perf_counter() - t)
        t = time.perf_counter()
        stale = changed_content(samples, content)
        hashed.append(time.perf_counter() - t)
    progress(f"  stat of {n} files: {median(full):.3f} s; {len(probes)} probes' stat {median(old) * 1e3:.2f} ms, "
             f"sha256 {median(hashed) * 1e3:.1f} ms")
    return {
        "description": f"source_stamps (a stat of every listed file, what a run from the cache now does) on {n} files "
                       f"in {min(FOLDERS, max(1, n // 50))} folders, warm, vs the old check's stat of {PROBES} "
                       f"probes; beside it the sha256 of the {PROBES} probes ({PROBE_BYTES} bytes each)",
        "files": n, "probes": int(len(probes)),
        "full_stat_s": full, "median_full_stat_s": median(full),
        "per_file_us": 1e6 * median(full) / n,
        "probe_stat_s": old, "median_probe_stat_s": median(old),
        "probe_sha256_s": hashed, "median_probe_sha256_s": median(hashed),
        "ratio_full_to_probes": ratio(median(full), median(old)),
        "changed_found": changed, "content_changed_found": stale,  # 0 and None: nothing changed
        "target": target_dict("cache_stat_s"),
        "met": met(median(full), "cache_stat_s"),
    }


def rows(results: dict) -> list[dict]:
    s = results["sections"][KEY]
    return [row("7", f"cache staleness check: stat of {s['files']} files",
                f"{fmt(s['median_full_stat_s'], '.3f')} s ({fmt(s['per_file_us'], '.1f')} us/file); old check "
                f"({s['probes']} probes) {fmt(1e3 * s['median_probe_stat_s'], '.2f')} ms; probes' sha256 "
                f"{fmt(1e3 * s['median_probe_sha256_s'], '.1f')} ms",
                fr(s["ratio_full_to_probes"], ".0f", "x"), "<= 1 s", yn(s["met"]))]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["cache_stat"]))
