"""Two launches building into one cache folder at once (issue 19.6): with the same key, the one that finds the
cache published while it decodes uses it (real processes, the interleaving forced); with another key, the later
one refuses to replace the published cache unless told to overwrite it (in process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import evaluate.pixels.cache_parts as cache_parts
from cvt_port.errors import BadInput
from cvt_port.variants import get_variant
from evaluate.pixels.cache import MANIFEST, build_cache, open_cache, verify_cache
from evaluate.sources.layouts import discover
from evaluate.pixels.preprocess import ReleaseTransform
from imagegen import make_ilsvrc_imagefolder

WNIDS = {"n01440764": [1, 2, 3], "n01443537": [4, 5, 6]}

# A process of a launch: argv = data, cache, rank, world, launch, role. Role "first": its decoding waits until
# the other launch has started decoding; role "late": it starts decoding (its part's folder made in the staging
# folder), then waits until the first launch has published the cache and removed the staging folder.
BUILDER = """
import glob, os, sys, time
from pathlib import Path
import evaluate.pixels.dataset
from cvt_port.variants import get_variant
from evaluate.pixels.cache import build_cache
from evaluate.sources.layouts import discover
from evaluate.pixels.preprocess import ReleaseTransform

data, cache, rank, world, launch, role = sys.argv[1:]
cache = Path(cache)
started = cache.parent / "late-started"

def until(condition):
    deadline = time.monotonic() + 300  # a bound for a hang only (slow imports on a busy machine)
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)

decode = evaluate.pixels.dataset.EvalDataset.__getitem__
def paced(self, i):
    if role == "first":
        until(started.exists)
    else:
        started.touch()
        until(lambda: (cache / "manifest.json").exists() and not glob.glob(str(cache.parent / ".cache.build-*")))
    return decode(self, i)
evaluate.pixels.dataset.EvalDataset.__getitem__ = paced

source = discover(data)
out = build_cache(cache, source, source.samples, {"release": ReleaseTransform(get_variant("cvt-13-224").preprocessing)},
                  num_workers=0, progress=False, rank=int(rank), world_size=int(world), launch=launch)
print("cache at", out)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    make_ilsvrc_imagefolder(root, WNIDS)
    return discover(root)


def release():
    return {"release": ReleaseTransform(get_variant("cvt-13-224").preprocessing)}


def test_two_launches_of_one_key_both_end_with_the_one_published_cache(data, tmp_path):
    cache = tmp_path / "cache"
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    roles = [(0, "A", "first"), (1, "A", "first"), (0, "B", "late")]  # launch B's rank 0 is enough to lose the race
    procs = [subprocess.Popen([sys.executable, str(script), str(data.root), str(cache), str(rank), "2", launch, role],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank, launch, role in roles]
    runs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert [rc for rc, _, _ in runs] == [0, 0, 0], [err[-1500:] for _, _, err in runs]
    assert all(f"cache at {cache}" in out for _, out, _ in runs)
    assert verify_cache(cache).intact and len(open_cache(cache, data.samples, release())) == len(data.samples)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builder.py", "cache", "late-started"]  # no staging left


def test_a_cache_of_another_key_published_meanwhile_is_refused_not_replaced(data, tmp_path, monkeypatch):
    """The check before decoding saw an empty folder; another launch published a cache of other images while
    this one decoded: under the lock, the key is checked again."""
    cache, ours, theirs = tmp_path / "cache", data.samples[:3], data.samples[3:]
    make_part = cache_parts._make_part

    def parts_then_another_launch(staging, dataset, rank, world, *rest):
        for r in range(world):  # this process's part and the other process's of this launch
            make_part(staging, dataset, r, world, *rest)
        build_cache(cache, data, theirs, release(), num_workers=0, progress=False)

    monkeypatch.setattr(cache_parts, "_make_part", parts_then_another_launch)
    with pytest.raises(BadInput) as exc:
        build_cache(cache, data, ours, release(), num_workers=0, progress=False, rank=0, world_size=2, launch="L")
    message = str(exc.value)
    assert "\n" not in message and str(cache) in message and "overwrite" in message, message
    assert "another image list" in message  # what differs, as the check before decoding says it
    assert len(open_cache(cache, theirs, release())) == 3  # the published cache is untouched
    monkeypatch.undo()
    stamp = (cache / MANIFEST).stat().st_mtime_ns
    build_cache(cache, data, ours, release(), num_workers=0, progress=False, rank=0, world_size=2, launch="M",
                overwrite=True)  # the finished parts are reused: nothing left to decode
    assert (cache / MANIFEST).stat().st_mtime_ns != stamp and len(open_cache(cache, ours, release())) == 3


def test_cache_build_refuses_a_cache_of_other_images_in_one_line_unless_overwrite(tiny, data, tmp_path, capsys):
    from evaluate.cli import main

    cache = tmp_path / "cache"
    argv = ["cache", "build", "--model", str(tiny["hf"]), "--config", str(tiny["yaml"]), "--data", str(data.root),
            "--cache-dir", str(cache), "--num-workers", "0"]
    assert main(argv + ["--subset", "4"]) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cache) in err[0] and "overwrite" in err[0] and "another image list" in err[0], err
    assert main(argv + ["--overwrite"]) == 0 and f"cache of {len(data.samples)} images" in capsys.readouterr().out
