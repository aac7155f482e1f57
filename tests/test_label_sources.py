"""Right labels in every layout (shared/spec/imagenet-labels.md): a `datasets` copy of an ImageNet
folder labels each image as the folder does, the Hub's ImageNet-1k keeps its standard positions,
integer labels need a stated numbering (index0, or the devkit's ids through its synset table), and
links that lead nowhere are unreadable images, not missing ones. Everything is generated here."""

from __future__ import annotations

import os

import datasets
import numpy as np
import pytest

from cvt_port.errors import BadInput
from cvt_port.labels import imagenet_class_names, imagenet_wnids
from evaluate.pixels.dataset import EvalDataset
from evaluate.sources.layouts import discover
from evaluate.pixels.preprocess import ReleaseTransform
from cvt_port.variants import Preprocessing
from imagegen import jpeg_bytes, make_flat, make_ilsvrc_imagefolder

WNIDS = imagenet_wnids()
SMALL = Preprocessing(img_size=16, resize="warp", crop_pct=1.0, interpolation="bilinear",
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def folder_labels(src) -> dict[str, int]:
    return {s.image_id.split("/")[-1]: s.label for s in src.samples}


# --------------------------------------------------------------------------- datasets copies


@pytest.fixture()
def imagenet_folder(tmp_path):
    """12 classes spread over the index range, 2 images each, unique ILSVRC names."""
    picks = [WNIDS[i] for i in (3, 17, 100, 250, 251, 400, 517, 600, 750, 900, 998, 999)]
    make_ilsvrc_imagefolder(tmp_path / "val", {w: [2 * k + 1, 2 * k + 2] for k, w in enumerate(picks)})
    return tmp_path / "val"


def test_an_imagefolder_copy_in_datasets_is_labelled_like_the_folder(imagenet_folder, tmp_path):
    folder = discover(imagenet_folder)
    built = datasets.load_dataset("imagefolder", data_dir=str(imagenet_folder), split="validation",
                                  cache_dir=str(tmp_path / "hf-cache"))
    assert built.features["label"].names[:2] == [WNIDS[3], WNIDS[17]]  # positions 0..11, named by WordNet id
    assert sorted(set(built["label"])) == list(range(12))
    built.save_to_disk(str(tmp_path / "saved"))
    built.to_parquet(str(tmp_path / "copy.parquet"))
    for copy in (tmp_path / "saved", tmp_path / "copy.parquet"):
        src = discover(copy)
        assert src.layout == "datasets"
        assert folder_labels(src) == folder_labels(folder)  # 24 images, every label the folder's
    assert min(folder_labels(folder).values()) == 3 and max(folder_labels(folder).values()) == 999


def _classlabel_dataset(labels, names):
    cells = [{"bytes": jpeg_bytes((30, 20), seed=k), "path": f"ILSVRC2012_val_{k + 1:08d}.JPEG"} for k in range(len(labels))]
    return datasets.Dataset.from_dict({"image": cells, "label": labels}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}))


def test_hub_imagenet_classlabel_positions_are_the_index(tmp_path):
    """Readable names, "crane" at 134 (the bird) and 517 (the machine): never translated by name."""
    model_names = imagenet_class_names()
    assert model_names[134] == model_names[517] == "crane"
    model_label2id = {n: i for i, n in enumerate(model_names)}  # a converted model's: 999 entries, crane -> 517
    # ClassLabel names must be unique: readable names, the second "crane" told apart
    names = [n if n not in model_names[:i] else f"{n} (machine)" for i, n in enumerate(model_names)]
    ds = _classlabel_dataset([134, 517, 0, 999, 639, 638], names)
    ds.to_parquet(str(tmp_path / "validation-00000-of-00001.parquet"))
    for label2id in (None, model_label2id):
        src = discover(tmp_path, label2id=label2id)
        assert [s.label for s in src.samples] == [134, 517, 0, 999, 639, 638]


def test_classlabel_of_the_models_labels_maps_through_label2id(tmp_path):
    label2id = {"dog": 0, "cat": 1, "bird": 2}
    _classlabel_dataset([0, 1, 2, 0], ["bird", "cat", "dog"]).save_to_disk(str(tmp_path / "d"))
    assert [s.label for s in discover(tmp_path / "d", label2id=label2id).samples] == [2, 1, 0, 2]


def test_classlabel_of_unknown_names_that_cannot_be_indices_is_bad_input(tmp_path):
    _classlabel_dataset([0, 1, 2], ["tench", "goldfish", "shark"]).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(BadInput) as e:
        discover(tmp_path / "d")
    assert "ClassLabel of 3 names" in str(e.value) and "1000 classes" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- numbering of integer labels


def fake_devkit_table(seed: int = 0) -> list[str]:
    """A devkit-like synset order: ILSVRC2012_ID k+1 is order[k] (a seeded permutation, not sorted)."""
    return [WNIDS[i] for i in np.random.default_rng(seed).permutation(1000)]


@pytest.fixture()
def flat_with_numbers(tmp_path):
    numbers = [1, 2, 5, 9]
    make_flat(tmp_path / "imgs", numbers)
    values = [1, 1000, 17, 500, 3, 42, 7, 8, 999]  # line n: the label of ILSVRC2012_val_{n:08d}
    (tmp_path / "gt.txt").write_text("".join(f"{v}\n" for v in values))
    return tmp_path, numbers, values


def test_integer_labels_without_a_stated_numbering_are_bad_input(flat_with_numbers):
    root, _, _ = flat_with_numbers
    with pytest.raises(BadInput) as e:
        discover(root / "imgs", labels_file=root / "gt.txt")
    msg = str(e.value)
    assert "\n" not in msg and "gt.txt line 1" in msg and "data.label_numbering index0" in msg
    assert "data.label_numbering devkit with data.devkit_map" in msg
    from evaluate.cli import flag
    from evaluate.plan import name_fields

    shown = name_fields(msg, flag)  # on the command line the hint names the flags
    assert "--label-numbering index0" in shown and "--label-numbering devkit with --devkit-map FILE" in shown


def test_index0_numbering(flat_with_numbers):
    root, numbers, values = flat_with_numbers
    (root / "gt0.txt").write_text("".join(f"{v - 1}\n" for v in values))
    src = discover(root / "imgs", labels_file=root / "gt0.txt", label_numbering="index0")
    assert [s.label for s in src.samples] == [values[n - 1] - 1 for n in numbers]


@pytest.mark.parametrize("form", ["id wnid words", "wnid id"])
def test_devkit_numbering_goes_through_the_synset_table(flat_with_numbers, form):
    root, numbers, values = flat_with_numbers
    table = fake_devkit_table()
    rows = [f"{k + 1} {w} some words, more" if form == "id wnid words" else f"{w} {k + 1}" for k, w in enumerate(table)]
    rows.insert(0, "# exported from meta.mat")
    np.random.default_rng(1).shuffle(rows[1:])
    (root / "map.txt").write_text("\n".join(rows) + "\n")
    src = discover(root / "imgs", labels_file=root / "gt.txt", label_numbering="devkit", devkit_map=root / "map.txt")
    assert [s.label for s in src.samples] == [WNIDS.index(table[values[n - 1] - 1]) for n in numbers]
    # the same file read as index0 gives other labels: the numbering matters
    assert [s.label for s in discover(root / "imgs", labels_file=root / "gt.txt", label_numbering="index0").samples] \
        != [s.label for s in src.samples]


def test_bad_numbering_arguments_and_maps(flat_with_numbers):
    root, _, _ = flat_with_numbers
    table = fake_devkit_table()

    def bad(match, **kw):
        with pytest.raises(BadInput, match=match) as e:
            discover(root / "imgs", labels_file=root / "gt.txt", **kw)
        assert "\n" not in str(e.value)

    bad("needs data.devkit_map FILE", label_numbering="devkit")
    bad("only used with data.label_numbering devkit", label_numbering="index0", devkit_map=root / "x.txt")
    bad("choose one of index0, devkit", label_numbering="one-based")
    (root / "short.txt").write_text("".join(f"{k + 1} {w}\n" for k, w in enumerate(table[:999])))
    bad("short.txt: has 999 classes", label_numbering="devkit", devkit_map=root / "short.txt")
    (root / "dup.txt").write_text("".join(f"{k + 1} {table[0]}\n" for k in range(2)))
    bad("dup.txt line 2: .* twice", label_numbering="devkit", devkit_map=root / "dup.txt")
    (root / "junk.txt").write_text("1 tench\n")
    bad("junk.txt line 1: expected '<ILSVRC2012_ID> <WNID>'", label_numbering="devkit", devkit_map=root / "junk.txt")
    (root / "gt_bad.txt").write_text("0\n" * 9)
    (root / "map.txt").write_text("".join(f"{k + 1} {w}\n" for k, w in enumerate(table)))
    with pytest.raises(BadInput, match="0 is not an ILSVRC2012_ID"):
        discover(root / "imgs", labels_file=root / "gt_bad.txt", label_numbering="devkit", devkit_map=root / "map.txt")


def test_numbers_that_are_the_models_own_labels_need_no_numbering(tmp_path):
    make_flat(tmp_path, [1, 2])
    (tmp_path / "labels.txt").write_text("7\n3\n")
    label2id = {str(d): 9 - d for d in range(10)}  # a model whose label "7" is output 2
    assert [s.label for s in discover(tmp_path, label2id=label2id).samples] == [2, 6]


def test_the_cli_flags_reach_discover(flat_with_numbers):
    from evaluate.cli import build_parser, plan_parts
    from evaluate.sources.inputs import prepare_data

    root, numbers, values = flat_with_numbers
    (root / "map.txt").write_text("".join(f"{k + 1} {w}\n" for k, w in enumerate(fake_devkit_table())))
    flags = ["--model", "m", "--data", str(root / "imgs"), "--labels-file", str(root / "gt.txt")]

    def data_spec(argv):
        return plan_parts(build_parser().parse_args(argv))[1]

    with pytest.raises(BadInput, match="data.label_numbering index0"):
        prepare_data(data_spec(flags), None)
    inputs = prepare_data(data_spec([*flags, "--label-numbering", "devkit", "--devkit-map", str(root / "map.txt")]), None)
    assert [s.label for s in inputs.samples] == [WNIDS.index(fake_devkit_table()[values[n - 1] - 1]) for n in numbers]


# --------------------------------------------------------------------------- unreadable entries


def test_looping_and_dangling_links_are_unreadable_images_not_missing_ones(tmp_path):
    root = tmp_path / "val"
    make_ilsvrc_imagefolder(root, {WNIDS[0]: [1], WNIDS[1]: [2]})
    loop = root / WNIDS[0] / "ILSVRC2012_val_00000003.JPEG"
    os.symlink(loop.name, loop)  # points at itself
    dangling = root / WNIDS[1] / "ILSVRC2012_val_00000004.JPEG"
    os.symlink(tmp_path / "gone.JPEG", dangling)
    only_link = root / WNIDS[5] / "ILSVRC2012_val_00000005.JPEG"
    only_link.parent.mkdir()
    os.symlink("nowhere.JPEG", only_link)  # a class whose only entry leads nowhere is still a class
    os.mkfifo(root / WNIDS[1] / "ILSVRC2012_val_00000006.JPEG")  # would block an open(): must not hang

    src = discover(root)
    assert sorted(s.image_id.split("/")[-1] for s in src.samples) == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 7)]
    ds = EvalDataset(src, src.samples, {"release": ReleaseTransform(SMALL)})
    items = {src.samples[i].image_id.split("/")[-1]: ds[i] for i in range(len(ds))}
    for n in (3, 4, 5, 6):
        item = items[f"ILSVRC2012_val_{n:08d}.JPEG"]
        assert item["ok"] is False and item["error"].startswith(f"{src.samples[item['index']].image_id}: cannot read image")
    assert items["ILSVRC2012_val_00000001.JPEG"]["ok"] and items["ILSVRC2012_val_00000002.JPEG"]["ok"]

    flat = tmp_path / "flat"
    make_flat(flat, [1])
    os.symlink("ILSVRC2012_val_00000002.JPEG", flat / "ILSVRC2012_val_00000002.JPEG")
    (flat / "labels.txt").write_text(f"{WNIDS[0]}\n{WNIDS[1]}\n")
    assert [s.image_id for s in discover(flat).samples] == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
