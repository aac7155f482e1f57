"""discover(): every accepted layout, on real image files the tests write, and every bad input."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from cvt_port.errors import BadInput
from cvt_port.labels import imagenet_wnids
from evaluate.sources.layouts import discover
from evaluate.sources.samples import Sample, ilsvrc_val_number
from imagegen import (
    jpeg_bytes,
    make_flat,
    make_ilsvrc_imagefolder,
    make_imagefolder,
    synthetic_image,
    write_image,
)

# The class list ships in the package; the spec's copy lies in ../shared/data beside the repository when there is
# one (as in CI). The shipped file is checked against facts that hold without it, and against the spec's copy
# when present.
SHIPPED_TSV = Path(__file__).resolve().parents[1] / "cvt_port/data/imagenet-1k-classes.tsv"
SPEC_TSV = Path(__file__).resolve().parents[2] / "shared/data/imagenet-1k-classes.tsv"
CLASS_LISTS = [SHIPPED_TSV] + ([SPEC_TSV] if SPEC_TSV.is_file() else [])
# sha256 of the class list as published in the spec's data folder (index, wnid, name; tab-separated; LF)
CLASSES_TSV_SHA256 = "0ebfc827844f0b4390822775e67ef3dc2ac0b7a9684c1e8897f000bcaf63abf5"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def sorted_wnids() -> list[str]:
    """Class order computed here, independently of cvt_port.labels: sort the wnids of the class list."""
    return sorted(r["wnid"] for r in read_rows(SPEC_TSV if SPEC_TSV.is_file() else SHIPPED_TSV))


WNIDS = sorted_wnids()
# A 10-class subset spread over the index range, including the first class n01440764.
SUBSET = [WNIDS[i] for i in (0, 1, 7, 99, 250, 500, 640, 777, 998, 999)]


@pytest.mark.parametrize("path", CLASS_LISTS, ids=lambda p: p.parent.parent.name + "/" + p.parent.name)
def test_class_list_is_the_published_file(path):
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CLASSES_TSV_SHA256, path
    rows = read_rows(path)
    assert list(rows[0]) == ["index", "wnid", "name"]
    wnids = [r["wnid"] for r in rows]
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert [int(r["index"]) for r in rows] == list(range(1000))
    assert wnids == sorted(wnids)  # the index is the position among the sorted ids (spec)
    assert (rows[0]["wnid"], rows[0]["name"]) == ("n01440764", "tench, Tinca tinca")
    assert rows[999]["wnid"] == "n15075141" and rows[999]["name"].startswith("toilet tissue")
    names = [r["name"] for r in rows]
    assert names.count("crane") == 2 and [i for i, n in enumerate(names) if n == "crane"] == [134, 517]


def test_package_reads_the_class_list_in_sorted_wnid_order():
    assert WNIDS[0] == "n01440764" and len(WNIDS) == 1000
    assert imagenet_wnids() == WNIDS


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_ten_class_subset_maps_to_imagenet_indices(tmp_path):
    make_imagefolder(tmp_path, reversed(SUBSET), per_class=2)
    src = discover(tmp_path)
    assert src.layout == "imagefolder"
    assert len(src.samples) == 20
    for s in src.samples:
        wnid = s.image_id.split("/")[0]
        assert s.label == WNIDS.index(wnid), s
        assert Path(s.ref) == tmp_path / s.image_id
    assert {s.label for s in src.samples if s.image_id.startswith("n01440764/")} == {0}
    assert [s.image_id for s in src.samples] == sorted(s.image_id for s in src.samples)
    assert src.is_ilsvrc_val is False
    img = src.load_image(src.samples[0])
    assert img.size == Image.open(src.samples[0].ref).size


def test_imagefolder_under_val_with_ilsvrc_names(tmp_path):
    make_ilsvrc_imagefolder(tmp_path / "val", {"n01440764": [293, 2138], SUBSET[5]: [1]})
    (tmp_path / "train").mkdir()  # an empty sibling must not matter
    src = discover(tmp_path)
    assert src.layout == "imagefolder"
    assert [s.image_id for s in src.samples] == [
        "n01440764/ILSVRC2012_val_00000293.JPEG",
        "n01440764/ILSVRC2012_val_00002138.JPEG",
        f"{SUBSET[5]}/ILSVRC2012_val_00000001.JPEG",
    ]
    assert [s.label for s in src.samples] == [0, 0, 500]
    assert src.is_ilsvrc_val is True


def test_imagefolder_ignores_hidden_and_non_image_files(tmp_path):
    make_imagefolder(tmp_path, ["n01440764"], per_class=2)
    (tmp_path / "n01440764" / "notes.txt").write_text("x")
    write_image(tmp_path / ".ipynb_checkpoints" / "a.jpg")
    (tmp_path / "README.md").write_text("readme")
    src = discover(tmp_path)
    assert [s.image_id for s in src.samples] == ["n01440764/img_0.JPEG", "n01440764/img_1.JPEG"]


def test_imagefolder_with_model_labels(tmp_path):
    label2id = {"dog": 0, "cat": 1, "7": 2}  # deliberately not alphabetical
    make_imagefolder(tmp_path, ["cat", "dog", "7"], per_class=1)
    src = discover(tmp_path, label2id=label2id)
    assert {s.image_id.split("/")[0]: s.label for s in src.samples} == label2id


def test_imagefolder_unknown_folder_is_bad_input(tmp_path):
    make_imagefolder(tmp_path, ["n01440764", "holiday_pics"], per_class=1)
    with pytest.raises(BadInput, match="holiday_pics"):
        discover(tmp_path)
    with pytest.raises(BadInput, match="holiday_pics"):
        discover(tmp_path, label2id={"0": 0, "1": 1})


def test_wnid_folder_outside_the_models_classes_is_bad_input(tmp_path):
    from evaluate.sources.inputs import prepare_data
    from evaluate.plan import DataSpec, PlanError

    make_imagefolder(tmp_path, [SUBSET[5]], per_class=1)
    spec = DataSpec(source=str(tmp_path))
    with pytest.raises(PlanError, match="500.*10 classes") as e:
        prepare_data(spec, {str(i): i for i in range(10)}, 10)
    assert e.value.fields == ("data.source",)
    assert len(prepare_data(spec, None, 1000).samples) == 1  # within a 1000-class model's outputs


# --------------------------------------------------------------------------- flat


def test_flat_with_kaggle_solution_csv(tmp_path):
    numbers = [5, 1, 12]
    make_flat(tmp_path, numbers)
    truth = {1: SUBSET[3], 5: SUBSET[0], 12: SUBSET[9], 40: SUBSET[2]}  # an extra row is fine
    with (tmp_path / "LOC_val_solution.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ImageId", "PredictionString"])
        for n, wnid in truth.items():
            w.writerow([f"ILSVRC2012_val_{n:08d}", f"{wnid} 68 139 422 389 {wnid} 1 2 3 4 "])
    src = discover(tmp_path)
    assert src.layout == "flat" and src.is_ilsvrc_val
    assert [s.image_id for s in src.samples] == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in sorted(numbers)]
    assert [s.label for s in src.samples] == [WNIDS.index(truth[n]) for n in sorted(numbers)]


def test_flat_csv_missing_an_image_is_bad_input(tmp_path):
    make_flat(tmp_path, [1, 2])
    (tmp_path / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{WNIDS[3]} 1 2 3 4\n")
    with pytest.raises(BadInput) as e:
        discover(tmp_path)
    assert "LOC_val_solution.csv" in str(e.value) and "ILSVRC2012_val_00000002" in str(e.value)


def test_flat_wnid_per_line_uses_the_number_in_the_file_name(tmp_path):
    """Line n is for ILSVRC2012_val_{n:08d}, whatever subset of images is present."""
    numbers = [3, 7, 20]
    make_flat(tmp_path / "imgs", numbers)
    rng = np.random.default_rng(0)
    line_wnids = [WNIDS[i] for i in rng.integers(0, 1000, 25)]
    labels = tmp_path / "ground_truth.txt"
    labels.write_text("\n".join(line_wnids) + "\n")
    src = discover(tmp_path / "imgs", labels_file=labels)
    assert [s.label for s in src.samples] == [WNIDS.index(line_wnids[n - 1]) for n in numbers]


def test_flat_index_per_line_full_ground_truth_file(tmp_path):
    numbers = [1, 4242, 50000]
    make_flat(tmp_path, numbers)
    truth = np.random.default_rng(1).integers(0, 1000, 50_000)
    (tmp_path / "val_labels.txt").write_text("".join(f"{v}\n" for v in truth))  # auto-detected
    src = discover(tmp_path, label_numbering="index0")
    assert [s.label for s in src.samples] == [int(truth[n - 1]) for n in numbers]


def test_flat_non_ilsvrc_names_use_sorted_order(tmp_path):
    for name, seed in (("b.jpg", 0), ("a.png", 1), ("c.jpeg", 2)):
        write_image(tmp_path / name, seed=seed)
    (tmp_path / "labels.txt").write_text("4\n5\n6\n")
    src = discover(tmp_path, label_numbering="index0")
    assert [(s.image_id, s.label) for s in src.samples] == [("a.png", 4), ("b.jpg", 5), ("c.jpeg", 6)]
    assert src.is_ilsvrc_val is False


def test_flat_labels_file_too_short_is_bad_input(tmp_path):
    make_flat(tmp_path / "imgs", [1, 2, 3])
    labels = tmp_path / "gt.txt"
    labels.write_text("1\n2\n")
    with pytest.raises(BadInput) as e:
        discover(tmp_path / "imgs", labels_file=labels)
    assert "ILSVRC2012_val_00000003.JPEG" in str(e.value) and "gt.txt" in str(e.value)


def test_flat_labels_file_with_unknown_token_is_bad_input(tmp_path):
    make_flat(tmp_path, [1])
    (tmp_path / "labels.txt").write_text("n99999999\n")
    with pytest.raises(BadInput, match="n99999999"):
        discover(tmp_path)


def test_flat_without_labels_file_is_bad_input(tmp_path):
    make_flat(tmp_path, [1, 2])
    with pytest.raises(BadInput, match="labels file"):
        discover(tmp_path)


# --------------------------------------------------------------------------- datasets


def _dataset(numbers, label_values, *, names=True, image_col="image", label_col="label", label_feature=None):
    cells = [
        {"bytes": jpeg_bytes((40 + 7 * k, 30 + 5 * k), seed=k), "path": f"ILSVRC2012_val_{n:08d}.JPEG" if names else None}
        for k, n in enumerate(numbers)
    ]
    features = datasets.Features(
        {image_col: datasets.Image(), label_col: label_feature or datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict({image_col: cells, label_col: label_values}, features=features)


def _check_pixels(src, ds, image_col="image"):
    for s in src.samples:
        ours = np.asarray(src.load_image(s))
        theirs = np.asarray(ds[s.ref][image_col])
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs), s


def test_datasets_save_to_disk_dict_with_classlabel(tmp_path):
    # ClassLabel names that are not the model's: the integers are used as they are.
    ds = _dataset([3, 1, 2], [10, 0, 999], label_feature=datasets.ClassLabel(names=[f"c{i}" for i in range(1000)]))
    datasets.DatasetDict({"validation": ds, "train": ds.select([0])}).save_to_disk(str(tmp_path / "saved"))
    src = discover(tmp_path / "saved")
    assert src.layout == "datasets" and src.is_ilsvrc_val
    assert src.samples == [
        Sample("ILSVRC2012_val_00000003.JPEG", 10, 0),
        Sample("ILSVRC2012_val_00000001.JPEG", 0, 1),
        Sample("ILSVRC2012_val_00000002.JPEG", 999, 2),
    ]
    _check_pixels(src, ds)
    assert len(discover(tmp_path / "saved", split="train").samples) == 1
    with pytest.raises(BadInput, match="split test: no such split"):
        discover(tmp_path / "saved", split="test")


def test_datasets_plain_save_to_disk_without_file_names(tmp_path):
    ds = _dataset([1, 2], [5, 6], names=False)
    ds.save_to_disk(str(tmp_path / "one"))
    src = discover(tmp_path / "one")
    assert [s.image_id for s in src.samples] == ["row-0", "row-1"]
    assert src.is_ilsvrc_val is False
    _check_pixels(src, ds)


def test_parquet_folder_with_wnid_strings_and_other_column_names(tmp_path):
    wn = [WNIDS[17], WNIDS[0], WNIDS[640]]
    ds = _dataset([9, 8, 7], wn, image_col="img", label_col="labels", label_feature=datasets.Value("string"))
    (tmp_path / "snap" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "snap" / "data" / "validation-00000-of-00001.parquet"))
    _dataset([1], [1]).to_parquet(str(tmp_path / "snap" / "data" / "train-00000-of-00001.parquet"))
    (tmp_path / "snap" / "README.md").write_text("a Hub snapshot")
    src = discover(tmp_path / "snap")
    assert src.layout == "datasets" and src.image_column == "img"
    assert [s.label for s in src.samples] == [17, 0, 640]
    assert [s.image_id for s in src.samples] == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in (9, 8, 7)]
    _check_pixels(src, ds, "img")
    single = discover(tmp_path / "snap" / "data" / "train-00000-of-00001.parquet")
    assert [s.label for s in single.samples] == [1]


def test_dataset_string_labels_go_through_label2id(tmp_path):
    label2id = {"1": 0, "0": 1}  # a model whose label "1" is output 0
    ds = _dataset([1, 2], ["0", "1"], names=False, label_feature=datasets.Value("string"))
    ds.save_to_disk(str(tmp_path / "d"))
    assert [s.label for s in discover(tmp_path / "d", label2id=label2id).samples] == [1, 0]
    assert [s.label for s in discover(tmp_path / "d", label_numbering="index0").samples] == [0, 1]


def test_dataset_columns_given_explicitly_and_missing(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"picture": [synthetic_image((30, 20), seed=i) for i in range(2)], "target": [3, 4], "label": [0, 0]},
        features=datasets.Features({"picture": datasets.Image(), "target": datasets.Value("int64"), "label": datasets.Value("int64")}),
    )
    ds.save_to_disk(str(tmp_path / "d"))
    src = discover(tmp_path / "d", label_column="target")
    assert src.image_column == "picture" and [s.label for s in src.samples] == [3, 4]
    with pytest.raises(BadInput, match="data.label_column nope: no such column"):
        discover(tmp_path / "d", label_column="nope")


def test_hub_id_goes_through_datasets_load_dataset(monkeypatch):
    ds = _dataset([50000, 1], [999, 0], label_feature=datasets.ClassLabel(names=[f"c{i}" for i in range(1000)]))
    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return ds

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    src = discover("ILSVRC/imagenet-1k", split="validation")
    assert calls == [("ILSVRC/imagenet-1k", (), {"split": "validation"})]
    assert src.layout == "datasets" and src.is_ilsvrc_val
    assert [(s.image_id, s.label) for s in src.samples] == [
        ("ILSVRC2012_val_00050000.JPEG", 999),
        ("ILSVRC2012_val_00000001.JPEG", 0),
    ]
    _check_pixels(src, ds)


def test_hub_failure_is_bad_input(monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BadInput) as e:
        discover("someone/some-dataset")
    assert "someone/some-dataset" in str(e.value) and "\n" not in str(e.value)


def test_dataset_without_labels_is_bad_input(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: _dataset([1], [-1]))
    with pytest.raises(BadInput, match="no label"):
        discover("ILSVRC/imagenet-1k", split="test")


# --------------------------------------------------------------------------- bad inputs


def test_missing_path_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_empty_folder_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="empty"):
        discover(tmp_path)


def test_unknown_layout_is_bad_input(tmp_path):
    for i in range(3):
        (tmp_path / f"notes{i}.txt").write_text("hello")
    with pytest.raises(BadInput) as e:
        discover(tmp_path)
    msg = str(e.value)
    assert "ImageFolder" in msg and "parquet" in msg and "\n" not in msg


def test_non_parquet_file_is_bad_input(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(BadInput, match="not .parquet"):
        discover(tmp_path / "x.csv")


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    "image_id, expected",
    [
        ("ILSVRC2012_val_00000001.JPEG", 1),
        ("n01440764/ILSVRC2012_val_00050000.JPEG", 50000),
        ("ILSVRC2012_val_00000293_n01751748.JPEG", 293),
        ("ILSVRC2012_val_00050001.JPEG", None),
        ("ILSVRC2012_val_00000000.JPEG", None),
        ("ILSVRC2012_val_0000001.JPEG", None),
        ("ILSVRC2012_test_00000001.JPEG", None),
        ("row-3", None),
    ],
)
def test_ilsvrc_val_number(image_id, expected):
    assert ilsvrc_val_number(image_id) == expected
