"""EvalDataset/collate (bad images reported, not raised; DataLoader workers), subsets and ReaL labels."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image, ImageFile

from cvt_port.errors import BadInput
from cvt_port.hf import make_image_processor
from cvt_port.variants import Preprocessing, get_variant
from evaluate.pixels.dataset import EvalDataset, collate
from evaluate.sources.layouts import discover
from evaluate.sources.samples import DataSource, Sample
from evaluate.pixels.preprocess import HFTransform, ReleaseTransform
from evaluate.sources.real_labels import REAL_LABELS_JSON, real_labels_for
from evaluate.sources.subset import read_subset_file, samples_sha256, select_subset, write_subset_file
from imagegen import jpeg_bytes, make_ilsvrc_imagefolder, make_imagefolder, write_corrupt, write_truncated_jpeg

SMALL = Preprocessing(img_size=32, resize="shorter_side_then_center_crop", crop_pct=0.875,
                      interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
WARP = Preprocessing(img_size=24, resize="warp", crop_pct=1.0,
                     interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture()
def folder_with_bad_images(tmp_path):
    make_imagefolder(tmp_path, ["n01440764", "n01443537"], per_class=3)
    write_corrupt(tmp_path / "n01440764" / "zz_corrupt.JPEG")
    write_truncated_jpeg(tmp_path / "n01443537" / "zz_truncated.JPEG")
    return tmp_path


def transforms():
    return {"release": ReleaseTransform(SMALL), "warp": ReleaseTransform(WARP)}


def test_items_and_bad_images(folder_with_bad_images):
    src = discover(folder_with_bad_images)
    ds = EvalDataset(src, src.samples, transforms())
    assert len(ds) == 8
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    bad = {}
    for i in range(len(ds)):
        item = ds[i]
        s = src.samples[i]
        assert item["index"] == i and item["label"] == s.label
        assert item["pixels"]["release"].shape == (3, 32, 32) and item["pixels"]["release"].dtype == torch.uint8
        assert item["pixels"]["warp"].shape == (3, 24, 24)
        if item["ok"]:
            with Image.open(s.ref) as img:
                assert torch.equal(item["pixels"]["release"], ReleaseTransform(SMALL)(img))
        else:
            assert all(int(t.abs().sum()) == 0 for t in item["pixels"].values())
            assert "\n" not in item["error"]
            bad[s.image_id] = item["error"]
    assert sorted(bad) == ["n01440764/zz_corrupt.JPEG", "n01443537/zz_truncated.JPEG"]
    for image_id, msg in bad.items():
        assert msg.startswith(image_id + ":"), msg


def test_collate_shapes_and_errors(folder_with_bad_images):
    src = discover(folder_with_bad_images)
    ds = EvalDataset(src, src.samples, transforms())
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["index"].dtype == torch.long and batch["index"].tolist() == list(range(8))
    assert batch["label"].tolist() == [s.label for s in src.samples]
    assert batch["ok"].dtype == torch.bool and batch["ok"].sum().item() == 6
    assert batch["pixels"]["release"].shape == (8, 3, 32, 32) and batch["pixels"]["release"].dtype == torch.uint8
    assert batch["pixels"]["warp"].shape == (8, 3, 24, 24)
    assert len(batch["errors"]) == 2 and "zz_corrupt" in batch["errors"][0]


def test_dataloader_with_two_workers_matches_in_process(folder_with_bad_images):
    src = discover(folder_with_bad_images)
    proc = make_image_processor(get_variant("cvt-13-224"))
    ds = EvalDataset(src, src.samples, {"release": ReleaseTransform(get_variant("cvt-13-224").preprocessing), "hf": HFTransform(proc)})
    pickle.loads(pickle.dumps(ds))
    ref = collate([ds[i] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert torch.equal(torch.cat([b["index"] for b in batches]), ref["index"])
    assert torch.equal(torch.cat([b["ok"] for b in batches]), ref["ok"])
    for mode in ("release", "hf"):
        assert torch.equal(torch.cat([b["pixels"][mode] for b in batches]), ref["pixels"][mode])
    assert sum((b["errors"] for b in batches), []) == ref["errors"]


def test_datasets_source_in_workers_with_a_corrupt_row(tmp_path):
    cells = [{"bytes": jpeg_bytes((40, 30), seed=k), "path": f"ILSVRC2012_val_{k + 1:08d}.JPEG"} for k in range(4)]
    cells[2] = {"bytes": b"not an image at all", "path": "ILSVRC2012_val_00000003.JPEG"}
    d = datasets.Dataset.from_dict(
        {"image": cells, "label": [0, 1, 2, 3]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    d.save_to_disk(str(tmp_path / "saved"))
    src = discover(tmp_path / "saved")
    ds = EvalDataset(src, src.samples, transforms())
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate))
    assert torch.cat([b["ok"] for b in batches]).tolist() == [True, True, False, True]
    errors = sum((b["errors"] for b in batches), [])
    assert len(errors) == 1 and errors[0].startswith("ILSVRC2012_val_00000003.JPEG:")


def test_unreadable_file_is_reported(tmp_path):
    src = DataSource("flat", [Sample("gone.JPEG", 0, str(tmp_path / "gone.JPEG"))], False)
    item = EvalDataset(src, src.samples, transforms())[0]
    assert item["ok"] is False and item["error"].startswith("gone.JPEG: cannot read image (FileNotFoundError")


# --------------------------------------------------------------------------- subsets


def _samples(counts: dict[int, int]) -> list[Sample]:
    out = []
    for label, n in counts.items():
        out += [Sample(f"c{label:03d}/img{j:03d}.JPEG", label, f"/x/{label}/{j}") for j in range(n)]
    return sorted(out, key=lambda s: s.image_id)


def test_subset_is_balanced_deterministic_and_in_source_order():
    samples = _samples({0: 10, 1: 3, 2: 10, 5: 10})
    sub = select_subset(samples, 13, seed=0)
    assert len(sub) == 13 and len(set(sub)) == 13
    counts = Counter(s.label for s in sub)
    assert counts == {0: 4, 1: 3, 2: 3, 5: 3}  # 3 full rounds (class 1 then runs out), then lowest index first
    positions = [samples.index(s) for s in sub]
    assert positions == sorted(positions)
    assert select_subset(samples, 13, seed=0) == sub
    assert select_subset(list(reversed(samples)), 13, seed=0) == list(reversed(sub))
    assert {s.image_id for s in select_subset(samples, 13, seed=1)} != {s.image_id for s in sub}
    assert select_subset(samples, len(samples), seed=3) == samples


def test_subset_larger_than_data_is_bad_input():
    with pytest.raises(BadInput, match=r"subset 34: is larger than the data \(33 images\)"):
        select_subset(_samples({0: 10, 1: 3, 2: 10, 5: 10}), 34, seed=0)


def test_subset_file_round_trip_and_unknown_id(tmp_path):
    samples = _samples({0: 4, 1: 4})
    chosen = [samples[5], samples[0], samples[2]]
    path = tmp_path / "subset.txt"
    write_subset_file(path, chosen)
    assert read_subset_file(path, samples) == chosen
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert samples_sha256(chosen) == expected
    assert samples_sha256(list(reversed(chosen))) != expected
    path.write_text(f"{samples[0].image_id}\n\nc999/nope.JPEG\n")
    with pytest.raises(BadInput, match=r"line 3.*c999/nope\.JPEG"):
        read_subset_file(path, samples)


def test_samples_sha256_of_known_text():
    ids = ["a/ü.JPEG", "b.png"]
    expected = hashlib.sha256("a/ü.JPEG\nb.png\n".encode("utf-8")).hexdigest()
    assert samples_sha256([Sample(i, 0, i) for i in ids]) == expected


# --------------------------------------------------------------------------- ReaL labels


def test_real_labels_for_ilsvrc_ids(tmp_path):
    raw = json.loads(Path(REAL_LABELS_JSON).read_text())
    ids = ["n01440764/ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00050000.JPEG"]
    assert real_labels_for(ids) == [raw[0], raw[1], raw[49999]]
    assert raw[0] == []  # excluded images stay empty
    assert real_labels_for(ids + ["row-7"]) is None
    make_ilsvrc_imagefolder(tmp_path, {"n01440764": [3, 4]})
    src = discover(tmp_path)
    assert src.is_ilsvrc_val
    assert real_labels_for([s.image_id for s in src.samples]) == [raw[2], raw[3]]
