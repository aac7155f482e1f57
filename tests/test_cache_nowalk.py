"""A run from a cache takes its image list from the cache: no walk of the data folder (a stat of each listed image,
no listing), the same predictions as a run from the JPEGs; other data flags or a changed folder fall back to the
walk, and a changed image (stat-ed, issue 25.6) makes the cache key refuse the cache in one line naming it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from evalkit import wnids
from imagegen import make_imagefolder, write_image

import evaluate.sources.inputs
from cvt_port.errors import BadInput
from evaluate.api import build_cache, evaluate_model
from evaluate.plan import DataSpec, EvalPlan, ModelEntry, ModelSpec, RunSpec


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("nowalk") / "val"
    make_imagefolder(root, wnids(8, step=97), per_class=6)  # 48 images: more than the probes
    return root


def run(tiny, data, **more):
    return evaluate_model(model=tiny["hf"], config=tiny["yaml"], data=data, accelerator="cpu", devices=1,
                          num_workers=0, summary=False, **more)


def build(tiny, data, cache, **data_flags):
    plan = EvalPlan(ModelSpec(model=str(tiny["hf"]), config=str(tiny["yaml"])),
                    DataSpec(source=str(data), **data_flags), RunSpec(num_workers=0))
    return build_cache(plan, cache)


def forbid_walk(monkeypatch, data) -> list[str]:
    """From here on the data folder may not be walked (nor listed by the cache's walking stamps); returns the images
    stat-ed."""
    def refuse(*a, **k):
        raise AssertionError("the data folder was walked")
    monkeypatch.setattr(evaluate.sources.inputs, "discover", refuse)
    monkeypatch.setattr("evaluate.pixels.cache.source_stamps", refuse)
    stats, real_stat = [], os.stat

    def counted(path, *a, **k):
        if str(path).lower().endswith(".jpeg") and str(path).startswith(str(data)):
            stats.append(str(path))
        return real_stat(path, *a, **k)
    monkeypatch.setattr(os, "stat", counted)
    return stats


def test_a_run_from_the_cache_does_not_walk_the_folder_and_predicts_the_same(tiny, data, tmp_path, monkeypatch):
    jpeg = run(tiny, data, subset=24, seed=3)
    build(tiny, data, tmp_path / "cache", subset=24, seed=3)
    stats = forbid_walk(monkeypatch, data)
    cached = run(tiny, data, subset=24, seed=3, cache_dir=tmp_path / "cache")
    assert cached.predictions == jpeg.predictions and len(cached.predictions) == 24
    assert len({p.top[cached.primary] for p in cached.predictions}) > 1
    assert cached.record["subset"] == 24 and cached.record["subset_sha256"] == jpeg.record["subset_sha256"]
    # every listed image stat-ed once (issue 25.6: a rewrite in place is seen), none of the other 24 images
    assert sorted(stats) == sorted(str(data / p.image_id) for p in cached.predictions)


def test_other_data_flags_walk_and_the_cache_of_other_images_is_refused(tiny, data, tmp_path):
    build(tiny, data, tmp_path / "cache", subset=24, seed=3)
    for flags in (dict(subset=12, seed=3), dict(subset=24, seed=4)):
        with pytest.raises(BadInput, match="another image list") as err:
            run(tiny, data, cache_dir=tmp_path / "cache", **flags)
        assert "\n" not in str(err.value)
    other = tmp_path / "other"
    shutil.copytree(data, other)
    next(other.rglob("*.JPEG")).unlink()
    with pytest.raises(BadInput, match="another image list"):
        run(tiny, other, cache_dir=tmp_path / "cache", subset=24, seed=3)


def test_an_image_rewritten_in_place_is_refused_without_a_walk(tiny, data, tmp_path, monkeypatch):
    """Issue 25.6: an image rewritten under its name and not among the probes was served from the cache by a run
    that takes its list from the cache. Every listed file is stat-ed now: refused, naming it, and still no walk."""
    copy = tmp_path / "val"
    shutil.copytree(data, copy)
    build(tiny, copy, tmp_path / "cache")
    files = sorted(copy.rglob("*.JPEG"))
    probed = {int(i * (len(files) - 1) / 31) for i in range(32)}  # 32 spread over the list: the probes, then and now
    victim = files[next(i for i in range(len(files)) if i not in probed)]  # not among the content probes
    write_image(victim, (70, 50), seed=99)
    forbid_walk(monkeypatch, copy)
    with pytest.raises(BadInput, match=r"1 image\(s\) changed size or modification time since the build, e\.g\. "
                       + victim.relative_to(copy).as_posix()) as err:
        run(tiny, copy, cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_a_rewrite_that_keeps_size_and_time_is_caught_by_the_content_probes(tiny, data, tmp_path):
    """What a stat cannot see: a probed image's bytes changed with its size and modification time restored."""
    copy = tmp_path / "val"
    shutil.copytree(data, copy)
    build(tiny, copy, tmp_path / "cache")
    first = sorted(copy.rglob("*.JPEG"))[0]  # the first image of the list: always probed
    st, raw = os.stat(first), bytearray(first.read_bytes())
    raw[-3] ^= 0xFF  # inside the JPEG's last bytes: same length
    first.write_bytes(bytes(raw))
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(first).st_size == st.st_size and os.stat(first).st_mtime_ns == st.st_mtime_ns
    with pytest.raises(BadInput, match=f"{first.relative_to(copy).as_posix()} has other bytes than when it was cached"):
        run(tiny, copy, cache_dir=tmp_path / "cache")


def test_a_changed_probe_or_a_new_image_makes_the_run_walk_and_refuse(tiny, data, tmp_path):
    copy = tmp_path / "val"
    shutil.copytree(data, copy)
    build(tiny, copy, tmp_path / "cache")
    first = sorted(copy.rglob("*.JPEG"))[0]  # the first image of the list: always probed
    write_image(first, (70, 50), seed=99)
    with pytest.raises(BadInput, match=r"1 image\(s\) changed size or modification time since the build, e\.g\. "
                       + first.relative_to(copy).as_posix()):
        run(tiny, copy, cache_dir=tmp_path / "cache")
    build(tiny, copy, tmp_path / "cache2")
    write_image(first.parent / "added.JPEG", seed=5)  # a new image in a class folder: its folder's time changes
    with pytest.raises(BadInput, match="another image list"):
        run(tiny, copy, cache_dir=tmp_path / "cache2")


def test_several_models_from_the_cache_do_not_walk_the_folder_either(tiny, data, tmp_path, monkeypatch):
    other = Path(shutil.copytree(tiny["hf"], tmp_path / "other"))
    models = [str(tiny["hf"]), str(other)]
    plan = EvalPlan(ModelSpec(model=models[0], config=str(tiny["yaml"]),
                              extra_models=(ModelEntry(models[1], str(tiny["yaml"])),)),
                    DataSpec(source=str(data), subset=24, seed=3), RunSpec(num_workers=0))
    jpeg = evaluate_model(model=models, config=tiny["yaml"], data=data, subset=24, seed=3, accelerator="cpu",
                          devices=1, num_workers=0)
    build_cache(plan, tmp_path / "cache")
    stats = forbid_walk(monkeypatch, data)
    cached = evaluate_model(model=models, config=tiny["yaml"], data=data, subset=24, seed=3, accelerator="cpu",
                            devices=1, num_workers=0, cache_dir=tmp_path / "cache")
    assert [r.predictions for r in cached.runs] == [r.predictions for r in jpeg.runs]
    assert len(cached.runs) == 2 and len(cached.runs[0].predictions) == 24
    assert len(stats) == len(set(stats)) < 48  # each listed image once, no walk


def count_listings(monkeypatch, data) -> list[str]:
    """Every directory listing under ``data`` from here on (os.scandir, os.listdir, os.walk: what pathlib's
    iterdir, glob and rglob use), by path."""
    seen: list[str] = []
    for name in ("scandir", "listdir", "walk"):
        real = getattr(os, name)

        def counted(path=".", *a, _real=real, **k):
            if str(os.fspath(path)).startswith(str(data)):
                seen.append(str(path))
            return _real(path, *a, **k)
        monkeypatch.setattr(os, name, counted)
    return seen


def test_a_cached_run_lists_no_folder_of_the_data_and_a_jpeg_run_lists_each_folder_a_bounded_number_of_times(
        tiny, data, tmp_path, monkeypatch):
    """Issue 26.4, at the level of the operating system: from the cache, not one directory of the data is listed
    (no walk at all); from the JPEGs, each folder is listed a few times, whatever the number of images in it (the
    walk grows with the folders and the files, never faster)."""
    build(tiny, data, tmp_path / "cache", subset=24, seed=3)
    listed = count_listings(monkeypatch, data)
    cached = run(tiny, data, subset=24, seed=3, cache_dir=tmp_path / "cache")
    assert len(cached.predictions) == 24 and listed == []
    jpeg = run(tiny, data, subset=24, seed=3)
    folders = {str(data), *(str(p) for p in data.iterdir())}
    assert jpeg.predictions == cached.predictions
    assert set(listed) <= folders and len(set(listed)) == len(folders) == 9  # the root and its 8 class folders
    assert max(listed.count(f) for f in folders) <= 4
