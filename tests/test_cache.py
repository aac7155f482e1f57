"""The preprocessed cache (evaluate.pixels.cache): bit-identical to the JPEG path, never reused with other
images or settings, never left half-written, bad images recorded, DataLoader workers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cvt_port.errors import BadInput
from cvt_port.hf import make_image_processor
from cvt_port.variants import get_variant
from evaluate.pixels.cache import (
    MANIFEST,
    CachedBatch,
    CachedDataset,
    build_cache,
    cache_key,
    open_cache,
)
from evaluate.pixels.dataset import EvalDataset, collate
from evaluate.sources.layouts import discover
from evaluate.sources.samples import Sample
from evaluate.validation.data_module import EvalDataModule, ShardSampler
from evaluate.pixels.preprocess import HFTransform, ReleaseTransform
from evaluate.sources.subset import select_subset
from imagegen import make_ilsvrc_imagefolder, write_corrupt, write_truncated_jpeg

WNIDS = {"n01440764": [1, 2, 3, 4], "n01443537": [5, 6, 7], "n01484850": [8, 9, 10]}


def make_transforms(name: str = "cvt-13-224") -> dict:
    variant = get_variant(name)
    return {"release": ReleaseTransform(variant.preprocessing), "hf": HFTransform(make_image_processor(variant))}


@pytest.fixture(scope="module")
def transforms():
    return make_transforms()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An ILSVRC-style ImageFolder of real JPEGs (varied sizes) with one corrupt and one truncated file."""
    root = tmp_path_factory.mktemp("val")
    make_ilsvrc_imagefolder(root, WNIDS)
    write_corrupt(root / "n01443537" / "ILSVRC2012_val_00000011.JPEG")
    write_truncated_jpeg(root / "n01484850" / "ILSVRC2012_val_00000012.JPEG")
    return discover(root)


@pytest.fixture(scope="module")
def built(data, transforms, tmp_path_factory):
    """A cache of every image of ``data`` in both modes, built with 2 decoding workers."""
    target = tmp_path_factory.mktemp("caches") / "val-cache"
    assert build_cache(target, data, data.samples, transforms, num_workers=2, skip_bad_images=True,
                       progress=False, batch_size=5) == target
    return target


def assert_same_item(cached: dict, expected: dict) -> None:
    assert cached.keys() == expected.keys()
    for k in ("index", "label", "ok"):
        assert cached[k] == expected[k] and type(cached[k]) is type(expected[k])
    assert cached.get("error") == expected.get("error")
    assert cached["pixels"].keys() == expected["pixels"].keys()
    for mode, pixels in expected["pixels"].items():
        got = cached["pixels"][mode]
        assert got.dtype == torch.uint8 and got.shape == pixels.shape and torch.equal(got, pixels)


def assert_same_batch(cached: dict, expected: dict) -> None:
    for k in ("index", "label", "ok"):
        assert cached[k].dtype == expected[k].dtype and torch.equal(cached[k], expected[k])
    assert cached["errors"] == expected["errors"]
    assert cached["pixels"].keys() == expected["pixels"].keys()
    for mode in expected["pixels"]:
        assert torch.equal(cached["pixels"][mode], expected["pixels"][mode])


def test_cached_items_are_bit_identical_to_the_jpeg_path(built, data, transforms):
    direct = EvalDataset(data, data.samples, transforms)
    cached = open_cache(built, data.samples, transforms)
    assert len(cached) == len(direct) == 12
    for i in range(len(direct)):
        assert_same_item(cached[i], direct[i])
    assert cached[-1]["index"] == len(cached) - 1
    with pytest.raises(IndexError):
        cached[len(cached)]


def test_bad_images_are_recorded_with_their_messages(built, data, transforms):
    cached = open_cache(built, data.samples, transforms)
    bad = {data.samples[i].image_id: cached[i] for i in range(len(cached)) if not cached[i]["ok"]}
    assert sorted(bad) == ["n01443537/ILSVRC2012_val_00000011.JPEG", "n01484850/ILSVRC2012_val_00000012.JPEG"]
    for image_id, item in bad.items():
        assert item["error"].startswith(f"{image_id}: cannot decode image (")
        assert all(int(p.abs().sum()) == 0 for p in item["pixels"].values())
    manifest = json.loads((built / MANIFEST).read_text())
    assert manifest["bad_images"] == 2 and manifest["count"] == 12
    assert manifest["key"] == cache_key(data.samples, transforms)
    assert manifest["modes"]["release"]["shape"] == [3, 224, 224] == manifest["modes"]["hf"]["shape"]
    assert (built / "image_ids.txt").read_text().splitlines() == [s.image_id for s in data.samples]


def test_the_build_leaves_only_the_cache_folder(built):
    assert sorted(p.name for p in built.parent.iterdir()) == [built.name]
    assert sorted(p.name for p in built.iterdir()) == sorted(
        ["manifest.json", "pixels-release.npy", "pixels-hf.npy", "labels.npy", "ok.npy", "errors.json", "image_ids.txt",
         "crc32-release.npy", "crc32-hf.npy", "sources.npy", "content-sha256.npy"])
    assert isinstance(np.load(built / "pixels-hf.npy", mmap_mode="r"), np.memmap)


@pytest.mark.parametrize("rank", [0, 1], ids=["consecutive", "strided"])
def test_dataloader_workers_give_the_jpeg_batches(built, data, transforms, rank):
    """Through DataLoader workers, with the cache's own collate (one slice per batch) and with the
    generic one, in consecutive (a shard) and strided index orders."""
    direct = EvalDataset(data, data.samples, transforms)
    cached = open_cache(built, data.samples, transforms)
    sampler = ShardSampler(len(cached), 0, 1) if rank == 0 else range(1, len(cached), 2)
    expected = list(DataLoader(direct, batch_size=4, sampler=sampler, collate_fn=collate))
    for collate_fn in (cached.collate, collate):
        loader = DataLoader(cached, batch_size=4, sampler=sampler, num_workers=2, collate_fn=collate_fn)
        got = list(loader)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same_batch(g, e)


def test_the_data_module_uses_the_cache_collate(built, data, transforms):
    cached = open_cache(built, data.samples, transforms)
    loader = EvalDataModule(cached, batch_size=5, num_workers=0).val_dataloader()
    assert loader.collate_fn is CachedDataset.collate
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    fetched = cached.__getitems__([2, 3, 4])  # what DataLoader's fetcher calls for a batch
    assert isinstance(fetched, CachedBatch) and len(fetched) == 3
    assert cached.collate(fetched) is fetched.collated  # the fast path: no re-stacking


def test_cached_dataset_pickles_after_use(built, data, transforms):
    cached = open_cache(built, data.samples, transforms)
    first = cached[0]
    clone = pickle.loads(pickle.dumps(cached))
    assert clone._arrays is None
    assert_same_item(clone[0], first)


def test_a_pass_over_the_cache_leaves_no_page_of_it_in_the_readers_memory(built, data, transforms):
    """Issue 26.1: memory per image stays flat. Rows are read with pread, not through a memory map: a map's pages
    stay in the reading process's resident set (a worker of a cached pass over 20,000 images held 1.8 GiB), so
    after every row was read, no pixel file of the cache is mapped in this process, and the rows are those of the
    files (checked against numpy's own reading of them)."""
    cached = open_cache(built, data.samples, transforms)
    n = len(cached)
    order = [*range(0, n, 2), *range(1, n, 2)]  # runs of one row and a run of several below
    rows = cached.__getitems__(order).collated["pixels"]
    runs = cached.__getitems__(list(range(n))).collated["pixels"]
    files = {mode: built / info["file"] for mode, info in cached.manifest["modes"].items()}
    for mode, path in files.items():
        on_disk = np.load(path)
        assert torch.equal(rows[mode], torch.from_numpy(on_disk[order])) and torch.equal(runs[mode], torch.from_numpy(on_disk))
    maps = Path("/proc/self/maps").read_text()
    mapped = [str(p) for p in files.values() if str(p.resolve()) in maps]
    assert not mapped, f"mapped in this process after the pass: {mapped}"


def test_other_preprocessing_is_refused(built, data):
    with pytest.raises(BadInput, match=r"other preprocessing settings \(differs in 'hf', 'release'\)") as err:
        open_cache(built, data.samples, make_transforms("cvt-13-384"))
    message = str(err.value)
    assert "\n" not in message and str(built) in message and "python -m evaluate cache build" in message
    assert "image list" not in message
    only_release = {"release": ReleaseTransform(get_variant("cvt-13-224").preprocessing)}
    with pytest.raises(BadInput, match="other preprocessing settings .modes hf, release vs release"):
        open_cache(built, data.samples, only_release)


def test_another_image_list_is_refused(built, data, transforms):
    subset = select_subset(data.samples, 6, seed=0)
    with pytest.raises(BadInput, match=r"another image list \(12 images.*this run: 6 images") as err:
        open_cache(built, subset, transforms)
    assert "other preprocessing settings" not in str(err.value)
    with pytest.raises(BadInput, match="another image list"):
        open_cache(built, data.samples[::-1], transforms)  # same images, other order
    relabelled = [Sample(s.image_id, (s.label + 1) % 1000, s.ref) for s in data.samples]
    with pytest.raises(BadInput, match="other labels for the same images"):
        open_cache(built, relabelled, transforms)
    with pytest.raises(BadInput, match=r"another image list .* and other preprocessing settings"):
        open_cache(built, subset, make_transforms("cvt-13-384"))


def test_missing_or_corrupt_cache_is_bad_input(built, data, transforms, tmp_path):
    with pytest.raises(BadInput, match="no such folder"):
        open_cache(tmp_path / "nothing", data.samples, transforms)
    with pytest.raises(BadInput, match="no manifest.json"):
        open_cache(tmp_path, data.samples, transforms)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(BadInput, match="corrupt"):
        open_cache(broken, data.samples, transforms)
    (broken / MANIFEST).write_text(json.dumps({"key": "x"}))
    with pytest.raises(BadInput, match="corrupt"):
        open_cache(broken, data.samples, transforms)
    # a right manifest whose pixel file is gone
    (broken / MANIFEST).write_text((built / MANIFEST).read_text())
    for name in ("labels.npy", "ok.npy", "errors.json", "content-sha256.npy"):
        (broken / name).write_bytes((built / name).read_bytes())
    with pytest.raises(BadInput, match="image_ids.txt, sources.npy damaged or missing"):
        open_cache(broken, data.samples, transforms)
    for name in ("image_ids.txt", "sources.npy", "crc32-hf.npy", "crc32-release.npy"):
        (broken / name).write_bytes((built / name).read_bytes())
    with pytest.raises(BadInput, match="missing or corrupt"):
        open_cache(broken, data.samples, transforms)


class FailsOnImage(ReleaseTransform):
    """The release transform, raising on its k-th image: a crash in the middle of a build."""

    def __init__(self, pre, k: int):
        super().__init__(pre)
        self.k, self.calls = k, 0

    def __call__(self, img):
        self.calls += 1
        if self.calls == self.k:
            raise RuntimeError("simulated crash")
        return super().__call__(img)


def test_an_interrupted_build_leaves_no_cache(data, tmp_path):
    target = tmp_path / "cache"
    failing = {"release": FailsOnImage(get_variant("cvt-13-224").preprocessing, k=7)}
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(target, data, data.samples, failing, num_workers=0, progress=False, batch_size=4)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_image_fails_the_build_unless_skipped(data, tmp_path):
    target = tmp_path / "cache"
    release = {"release": ReleaseTransform(get_variant("cvt-13-224").preprocessing)}
    with pytest.raises(BadInput, match=r"ILSVRC2012_val_00000011.JPEG: cannot decode image .*data.skip_bad_images"):
        build_cache(target, data, data.samples, release, num_workers=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_rebuilding_reuses_the_same_cache_and_refuses_a_foreign_one(data, tmp_path):
    target = tmp_path / "cache"
    release = {"release": ReleaseTransform(get_variant("cvt-13-224").preprocessing)}
    good = [s for s in data.samples if "0000001" not in s.image_id]  # the two bad files are 11 and 12
    build_cache(target, data, good, release, num_workers=0, progress=False)
    stamp = (target / MANIFEST).stat().st_mtime_ns
    build_cache(target, data, good, release, num_workers=0, progress=False)  # same key: nothing to do
    assert (target / MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(BadInput, match="exists and is not a cache of these images"):
        build_cache(target, data, good[:3], release, num_workers=0, progress=False)
    build_cache(target, data, good[:3], release, num_workers=0, progress=False, overwrite=True)
    assert len(open_cache(target, good[:3], release)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
