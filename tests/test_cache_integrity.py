"""A cache never serves wrong pixels: damaged images are bad images (by name), damaged files are
refused, a changed source file changes the key, and `cache verify` checks a whole cache."""

from __future__ import annotations

import json
import os
import shutil

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cvt_port.errors import BadInput
from cvt_port.variants import get_variant
from evaluate.pixels.cache import CachedDataset, build_cache, open_cache, verify_cache
from evaluate.cli import main
from evaluate.pixels.dataset import EvalDataset
from evaluate.sources.layouts import discover
from evaluate.pixels.preprocess import ReleaseTransform
from imagegen import jpeg_bytes, make_ilsvrc_imagefolder, write_image

WNIDS = {"n01440764": [1, 2, 3, 4], "n01443537": [5, 6, 7], "n01484850": [8, 9, 10]}


def release(name: str = "cvt-13-224") -> dict:
    return {"release": ReleaseTransform(get_variant(name).preprocessing)}


@pytest.fixture()
def data(tmp_path):
    make_ilsvrc_imagefolder(tmp_path / "val", WNIDS)
    return discover(tmp_path / "val")


@pytest.fixture()
def built(data, tmp_path):
    return build_cache(tmp_path / "cache", data, data.samples, release(), num_workers=0, progress=False)


def invert(cache, rows, mode: str = "release") -> None:
    """Flip every bit of the cached pixels of ``rows``, in place."""
    arr = np.load(cache / f"pixels-{mode}.npy", mmap_mode="r+")
    for i in rows:
        arr[i] = 255 - arr[i]
    arr.flush()


def test_damaged_pixels_are_bad_images_named_by_id(built, data):
    damaged = [0, 3, 4, 8, 9]  # half of the 10 images
    invert(built, damaged)
    cached = open_cache(built, data.samples, release())
    direct = EvalDataset(data, data.samples, release())
    for i in range(len(cached)):
        item = cached[i]
        if i in damaged:
            assert item["ok"] is False
            assert item["error"].startswith(f"{data.samples[i].image_id}: cached pixels damaged")
            assert "cache verify" in item["error"] and "\n" not in item["error"]
            assert int(item["pixels"]["release"].abs().sum()) == 0
        else:
            assert item["ok"] is True and torch.equal(item["pixels"]["release"], direct[i]["pixels"]["release"])
    batches = list(DataLoader(cached, batch_size=5, collate_fn=CachedDataset.collate, num_workers=2))
    assert torch.cat([b["ok"] for b in batches]).tolist() == [i not in damaged for i in range(10)]
    errors = sum((b["errors"] for b in batches), [])
    assert [e.split(":")[0] for e in errors] == [data.samples[i].image_id for i in damaged]


def test_verify_cache_finds_every_damaged_image(built, data, capsys):
    report = verify_cache(built)
    assert report.intact and report.count == 10 and report.damaged == []
    assert main(["cache", "verify", "--cache-dir", str(built)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("10 images, modes release: intact")
    # one changed byte in one image is found
    arr = np.load(built / "pixels-release.npy", mmap_mode="r+")
    arr[7, 1, 100, 100] ^= 1
    arr.flush()
    del arr
    report = verify_cache(built, chunk=5)
    assert not report.intact and report.damaged == [(data.samples[7].image_id, "pixels-release.npy")]
    assert main(["cache", "verify", "--cache-dir", str(built)]) == 1
    out = capsys.readouterr().out
    assert f"damaged: {data.samples[7].image_id} in pixels-release.npy" in out and "DAMAGED: 1 image(s)" in out


def test_damaged_small_files_are_refused(built, data, capsys):
    labels = np.load(built / "labels.npy")
    labels[2] += 1
    np.save(built / "labels.npy", labels)  # a well-formed file with a wrong label
    with pytest.raises(BadInput, match="labels.npy damaged or missing"):
        open_cache(built, data.samples, release())
    assert verify_cache(built).damaged_files == ["labels.npy"]
    assert main(["cache", "verify", "--cache-dir", str(built)]) == 1
    assert "damaged file:" in capsys.readouterr().out


def test_verify_of_something_that_is_not_a_cache(tmp_path, capsys):
    with pytest.raises(BadInput, match="no manifest.json"):
        verify_cache(tmp_path)
    assert main(["cache", "verify", "--cache-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cache ") and "no such folder" in err[0]


def test_an_image_replaced_under_the_same_name_is_not_served(built, data):
    victim = data.samples[5]
    write_image(victim.ref, (100, 70), seed=99)  # another photo, same name
    with pytest.raises(BadInput, match=rf"other source files: 1 image\(s\) changed .* e.g. {victim.image_id}"):
        open_cache(built, data.samples, release())
    with pytest.raises(BadInput, match=rf"not a cache of these images.*{victim.image_id}"):
        build_cache(built, data, data.samples, release(), num_workers=0, progress=False)
    build_cache(built, data, data.samples, release(), num_workers=0, progress=False, overwrite=True)
    cached = open_cache(built, data.samples, release())
    assert torch.equal(cached[5]["pixels"]["release"], EvalDataset(data, data.samples, release())[5]["pixels"]["release"])


def test_a_touched_file_changes_the_key(built, data):
    st = os.stat(data.samples[0].ref)
    os.utime(data.samples[0].ref, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same bytes, new time
    with pytest.raises(BadInput, match="changed size or modification time"):
        open_cache(built, data.samples, release())


def test_dataset_rows_are_keyed_by_their_arrow_files(tmp_path):
    def save(seed: int):
        cells = [{"bytes": jpeg_bytes((40, 30), seed=seed + k), "path": f"ILSVRC2012_val_{k + 1:08d}.JPEG"} for k in range(3)]
        ds = datasets.Dataset.from_dict({"image": cells, "label": [0, 1, 2]},
                                        features=datasets.Features({"image": datasets.Image(),
                                                                    "label": datasets.Value("int64")}))
        shutil.rmtree(tmp_path / "saved", ignore_errors=True)
        ds.save_to_disk(str(tmp_path / "saved"))
        return discover(tmp_path / "saved")

    src = save(0)
    cache = build_cache(tmp_path / "cache", src, src.samples, release(), num_workers=0, progress=False)
    with pytest.raises(ValueError, match="source="):
        open_cache(cache, src.samples, release())
    assert len(open_cache(cache, src.samples, release(), source=src)) == 3
    src = save(7)  # the same ids and labels, other pixels
    with pytest.raises(BadInput, match="other source files"):
        open_cache(cache, src.samples, release(), source=src)


def test_a_run_on_a_damaged_cache_stops_like_on_a_bad_image(tmp_path, capsys):
    """The issue's case: half of the bundled digits' cached pixels inverted. It used to score 52.22%
    instead of 99.72% silently; now the run stops naming the first damaged image."""
    from cvt_port import convert
    from evaluate.default import CHECKPOINT, DATA, VARIANT

    model = convert(CHECKPOINT, tmp_path / "model", variant=get_variant(VARIANT), log=lambda m: None)
    label2id = json.loads((model / "config.json").read_text())["label2id"]
    src = discover(DATA, label2id=label2id)
    cache = build_cache(tmp_path / "cache", src, src.samples, release(VARIANT), num_workers=0, progress=False)
    invert(cache, range(1, len(src.samples), 2))
    code = main(["--model", str(model), "--config", VARIANT, "--data", str(DATA), "--cache-dir", str(cache),
                 "--output", str(tmp_path / "out"), "--accelerator", "cpu", "--num-workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and f"{src.samples[1].image_id}: cached pixels damaged" in err
    assert not (tmp_path / "out" / "report.json").exists()
