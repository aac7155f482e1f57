"""Label spaces (issue 21.1): a data set of a subset of the model's classes is scored over that subset.

The model is the bundled digits CvT (10 classes, trained) with two classifier biases raised: class 9, which the data
do not have, takes about a fifth of the images when all ten classes are ranked, and class 3, which they have, takes
a few more. The data are four of the ten classes. The figures are checked against an argmax over the subset's logits
computed here, apart from the pass (the model run by hand); without the mask they would count the class-9
predictions as errors and the test fails.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from cvt_port.errors import BadInput
from cvt_port.labels import imagenet_wnids
from evaluate.api import PlanError, evaluate_model
from evaluate.default import CHECKPOINT, DATA, VARIANT
from evaluate.sources.label_space import KNOWN_LISTS, known_indices, known_wnids, resolve_label_space
from evaluate.sources.layouts import discover
from evalkit import evaluate_cli, make_half_right_imagefolder
from imagegen import make_imagefolder

CPU = dict(accelerator="cpu", num_workers=0, batch_size=64)
SUBSET = [2, 3, 5, 8]
OUTSIDE, INSIDE = 9, 3  # the classes whose bias is raised
BIAS = {OUTSIDE: 4.5, INSIDE: 4.0}
SHARED_CLASSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-1k-classes.tsv"


def biased_copy(folder: Path, out: Path) -> Path:
    """A copy of a converted model folder with :data:`BIAS` added to its classifier's biases."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    tensors = load_file(out / "model.safetensors")
    for c, b in BIAS.items():
        tensors["classifier.bias"][c] += b
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def biased(digits, tmp_path_factory):
    return biased_copy(digits, tmp_path_factory.mktemp("biased") / "hf")


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """Four of the bundled digits' ten class folders."""
    root = tmp_path_factory.mktemp("four")
    for c in SUBSET:
        shutil.copytree(DATA / str(c), root / str(c))
    return root


def logits_by_hand(folder: Path, data: Path, stock: bool = False) -> dict[str, torch.Tensor]:
    """image id -> the model's logits, computed here: the release preprocessing, then the model (cvt_port's class,
    or the stock one)."""
    import cvt_port
    from cvt_port.variants import get_variant
    from evaluate.pixels.preprocess import ReleaseTransform
    from transformers import CvtForImageClassification

    model = CvtForImageClassification.from_pretrained(folder).eval() if stock else cvt_port.load_model(folder)
    transform = ReleaseTransform(get_variant(VARIANT).preprocessing)
    files = sorted(p for p in data.rglob("*.png"))
    x = transform.normalization(torch.stack([transform(Image.open(p).convert("RGB")) for p in files]))
    with torch.no_grad():
        out = model(x).logits
    return {p.relative_to(data).as_posix(): row for p, row in zip(files, out)}


@pytest.fixture(scope="module")
def by_hand(biased, digits, four) -> dict[str, dict[str, torch.Tensor]]:
    """Each row's logits on the four classes' images, computed here; the original's through its converted twin
    (equal to 1e-5)."""
    return {"converted": logits_by_hand(biased, four), "stock": logits_by_hand(biased, four, stock=True),
            "original": logits_by_hand(digits, four)}


def subset_argmax(logits: torch.Tensor) -> int:
    """The best class among :data:`SUBSET`, from the subset's own logits."""
    return SUBSET[int(torch.argmax(logits[SUBSET]))]


@pytest.fixture(scope="module")
def scored(biased, four, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored") / "out"
    result = evaluate_model(model=biased, data=four, config=VARIANT, reference=CHECKPOINT, with_stock=True,
                            label_space="data", output=out, **CPU)
    return result, out


def test_every_row_is_ranked_over_the_data_classes(scored, by_hand):
    result, _ = scored
    converted, stock, original = by_hand["converted"], by_hand["stock"], by_hand["original"]
    preds = {p.image_id: p for p in result.predictions}
    assert set(preds) == set(converted) and len(preds) == 4 * 36
    # the fixture is not trivial: over all ten classes, many images go to the class the data do not have
    outside = sum(int(torch.argmax(v)) == OUTSIDE for v in converted.values())
    assert outside >= 20
    for row, logits in (("converted", converted), ("stock", stock), ("original", original)):
        expected = {i: subset_argmax(v) for i, v in logits.items()}
        assert {i: p.top1(row) for i, p in preds.items()} == expected, row
        right = sum(expected[i] == p.label for i, p in preds.items())
        assert result.model(row)["top1"] == pytest.approx(100 * right / len(preds)), row
        assert all(sorted(p.top[row]) == SUBSET for p in preds.values()), row  # top-k: the four classes only
    conv = {i: subset_argmax(v) for i, v in converted.items()}
    orig = {i: subset_argmax(v) for i, v in original.items()}
    assert 80 < result.top1 < 100 and result.top5 == 100.0  # the raised class 3 still costs some images
    agree = sum(conv[i] == orig[i] for i in preds) / len(preds)
    assert result.record["agreement"] == pytest.approx(agree) and agree < 1
    assert sorted(result.record["top1_differs"]) == sorted(i for i in preds if conv[i] != orig[i])
    assert result.record["label_space"] == {"name": "data", "classes": 4,
                                            "sha256": hashlib.sha256(b"2\n3\n5\n8\n").hexdigest()}


def test_per_class_figures_are_over_the_label_space(scored, by_hand):
    _, out = scored
    converted = by_hand["converted"]
    lines = (out / "per_class.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == SUBSET
    col = header.index("converted_top1")
    for r in rows:
        c = int(r[0])
        mine = [subset_argmax(v) for i, v in converted.items() if i.startswith(f"{c}/")]
        assert float(r[col]) == pytest.approx(100 * sum(p == c for p in mine) / len(mine), abs=1e-3)


def test_without_a_stated_space_a_few_classes_are_scored_over_all(biased, four, by_hand):
    result = evaluate_model(model=biased, data=four, config=VARIANT, **CPU)
    assert result.record["label_space"]["name"] == "full" and result.record["label_space"]["classes"] == 10
    converted = by_hand["converted"]
    preds = {p.image_id: p for p in result.predictions}
    assert {i: p.top1("converted") for i, p in preds.items()} == {i: int(torch.argmax(v)) for i, v in converted.items()}
    assert sum(p.top1("converted") == OUTSIDE for p in preds.values()) >= 20


def test_a_space_the_model_or_the_data_contradict_is_exit_2(digits, four, tiny, tmp_path):
    r = evaluate_cli("--model", digits, "--config", VARIANT, "--data", four, "--label-space", "imagenet-r",
                     "--output", tmp_path / "out", "--accelerator", "cpu")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--label-space imagenet-r" in r.stderr and "10 classes" in r.stderr
    # ImageNet-A stated, but the data have a class that is not one of its 200
    a = known_wnids("imagenet-a")
    not_a = next(w for w in imagenet_wnids() if w not in a)
    make_imagefolder(tmp_path / "a", [a[0], a[1], not_a], per_class=1)
    r = evaluate_cli("--model", tiny["hf"], "--config", tiny["yaml"], "--data", tmp_path / "a", "--label-space",
                     "imagenet-a", "--output", tmp_path / "out", "--accelerator", "cpu")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--label-space imagenet-a" in r.stderr and not_a in r.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(PlanError, match="data.label_space"):
        evaluate_model(model=digits, data=four, config=VARIANT, label_space="imagenet-b", **CPU)


def test_a_baseline_ranked_over_other_classes_is_refused(scored, biased, four):
    _, out = scored  # ranked over the data's four classes
    with pytest.raises(PlanError, match="report.baseline.*label_space"):
        evaluate_model(model=biased, data=four, config=VARIANT, baseline=out, **CPU)


def test_imagenet_a_is_detected_from_its_folders(tiny, tmp_path):
    """Every class folder of ImageNet-A, one image each: detected with no flag, from all the data's classes although
    only a subset of the images is evaluated, and every row ranks A's 200 classes only."""
    a = known_wnids("imagenet-a")
    make_imagefolder(tmp_path / "a", a, per_class=1)
    result = evaluate_model(model=tiny["hf"], data=tmp_path / "a", config=tiny["yaml"], reference=tiny["pth"],
                            subset=8, **CPU)
    assert result.record["label_space"]["name"] == "imagenet-a" and result.record["label_space"]["classes"] == 200
    allowed = set(known_indices("imagenet-a"))  # 5 of 1000 classes all among A's 200 by chance: never, unmasked
    assert all(len(p.top[row]) == 5 and set(p.top[row]) <= allowed for p in result.predictions
               for row in ("converted", "original"))


@pytest.mark.parametrize("name", sorted(KNOWN_LISTS))
def test_shipped_lists_are_200_distinct_imagenet_ids(name):
    shipped = [line for line in KNOWN_LISTS[name].read_text().splitlines() if line]
    published = [line.split("\t")[1] for line in SHARED_CLASSES.read_text().splitlines()[1:]] \
        if SHARED_CLASSES.is_file() else imagenet_wnids()
    assert len(shipped) == len(set(shipped)) == 200 and shipped == sorted(shipped)
    assert set(shipped) <= set(published) and len(published) == 1000
    assert known_wnids(name) == tuple(shipped)
    assert resolve_label_space(None, known_indices(name), 1000).name == name
    assert resolve_label_space(None, known_indices(name)[:-1], 1000).name == "full"  # a part of it: not detected
    assert set(known_wnids("imagenet-a")) != set(known_wnids("imagenet-r"))


def test_index_named_folders_are_class_numbers_in_the_stated_numbering(tmp_path):
    """ImageNet-V2's folders are named 0..999: class indices, never WordNet ids or a model's label names."""
    names = {w: i for i, w in enumerate(n.split(",")[0] for n in ["tench, Tinca tinca"] + [f"c{i}" for i in range(1, 1000)])}
    make_imagefolder(tmp_path, ["0", "1", "10", "999"], per_class=1)
    with pytest.raises(BadInput, match="class folder '0'.*data.label_numbering index0"):
        discover(tmp_path, label2id=names)
    src = discover(tmp_path, label2id=names, label_numbering="index0")
    assert {s.image_id.split("/")[0]: s.label for s in src.samples} == {"0": 0, "1": 1, "10": 10, "999": 999}


def test_v2_folders_read_with_index0_score_as_their_wordnet_twin(tiny, tmp_path):
    """The tiny colour model on the same images filed under WordNet ids and under class numbers: the same labels
    and figures with --label-numbering index0; without it, one line naming the flag."""
    make_half_right_imagefolder(tmp_path / "wnid")
    wn = imagenet_wnids()
    for d in (tmp_path / "wnid").iterdir():
        shutil.copytree(d, tmp_path / "v2" / str(wn.index(d.name)))
    common = dict(model=tiny["hf"], config=tiny["yaml"], subset=12, **CPU)
    by_wnid = evaluate_model(data=tmp_path / "wnid", **common)
    by_index = evaluate_model(data=tmp_path / "v2", label_numbering="index0", **common)
    assert [(p.image_id.split("/")[1], p.label, p.top1("converted")) for p in by_index.predictions] == \
        [(p.image_id.split("/")[1], p.label, p.top1("converted")) for p in by_wnid.predictions]
    assert by_index.top1 == by_wnid.top1 and 0 < by_index.top1 < 100
    r = evaluate_cli("--model", tiny["hf"], "--config", tiny["yaml"], "--data", tmp_path / "v2", "--output",
                     tmp_path / "out", "--accelerator", "cpu")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--label-numbering index0" in r.stderr


@pytest.mark.parametrize("padded", ["010", "007", "+7", "٣"])
def test_index_folders_and_labels_are_canonical_numbers_or_refused(tiny, tmp_path, padded):
    """Issue 25.1: a folder '010' beside '10' was read as class 10 and merged with it ('007' as 7), silently. A class
    number written as text is its canonical decimal, or one line naming the folder (the file and line)."""
    make_imagefolder(tmp_path / "v2", ["10", "7", padded], per_class=1)
    with pytest.raises(BadInput, match=re.escape(f"class folder '{padded}': '{padded}' is not a class number as written 0, 1, .., 999")):
        discover(tmp_path / "v2", label_numbering="index0")
    r = evaluate_cli("--model", tiny["hf"], "--config", tiny["yaml"], "--data", tmp_path / "v2", "--label-numbering",
                     "index0", "--output", tmp_path / "out", "--accelerator", "cpu")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"class folder '{padded}'" in r.stderr and not (tmp_path / "out").exists()
    # a labels file carrying indices as text: the file and the line
    from imagegen import make_flat

    make_flat(tmp_path / "flat", [1, 2, 3])
    (tmp_path / "gt.txt").write_text(f"10\n7\n{padded}\n")
    with pytest.raises(BadInput, match=re.escape(f"gt.txt line 3: '{padded}' is not a class number")):
        discover(tmp_path / "flat", labels_file=tmp_path / "gt.txt", label_numbering="index0")
    (tmp_path / "ok.txt").write_text("10\n7\n0\n")
    assert [s.label for s in discover(tmp_path / "flat", labels_file=tmp_path / "ok.txt",
                                      label_numbering="index0").samples] == [10, 7, 0]


def test_webdataset_cls_is_a_canonical_number_or_refused(tmp_path):
    """Issue 25.1: a shard's ``cls`` '007' was read as class 7; it is refused, naming the shard, key and member."""
    import io
    import tarfile

    def shard(path, cls: bytes):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
        with tarfile.open(path, "w") as tar:
            for name, data in [("a.png", buf.getvalue()), ("a.cls", b"12"), ("b.png", buf.getvalue()), ("b.cls", cls)]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    assert [s.label for s in discover(shard(tmp_path / "ok.tar", b"7")).samples] == [12, 7]
    with pytest.raises(BadInput, match=r"bad\.tar.*'007' is not a class number"):
        discover(shard(tmp_path / "bad.tar", b"007"))


def test_a_partial_imagenet_a_copy_says_which_space_and_how_to_choose(tiny, tmp_path, capsys):
    """Issue 25.4: 150 of ImageNet-A's 200 folders with no data.label_space were ranked 1000-way without a word. The
    summary now says so in one line (the space used, the choices) and report.json records it."""
    a = known_wnids("imagenet-a")
    make_imagefolder(tmp_path / "a150", a[:150], per_class=1)
    result = evaluate_model(model=tiny["hf"], data=tmp_path / "a150", config=tiny["yaml"], subset=8, summary=True,
                            **CPU)
    space = result.record["label_space"]
    assert (space["name"], space["classes"]) == ("full", 1000)
    assert space["note"] == ("the data's 150 classes are among ImageNet-A's 200, ranked over all 1000 classes of the "
                             "model; data.label_space imagenet-a ranks over the 200, data.label_space data over the "
                             "data's 150")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("label space")]
    assert lines == [f"label space full (detected): {space['note']} (on the command line: --label-space)"]
    # stated, it is the user's choice: nothing to say; the whole list detected: its own line, no note
    stated = evaluate_model(model=tiny["hf"], data=tmp_path / "a150", config=tiny["yaml"], subset=8,
                            label_space="imagenet-a", **CPU)
    assert "note" not in stated.record["label_space"] and stated.record["label_space"]["classes"] == 200


def test_any_subset_of_the_models_classes_says_so(biased, four, capsys):
    result = evaluate_model(model=biased, data=four, config=VARIANT, summary=True, **CPU)
    note = result.record["label_space"]["note"]
    assert note == "the data have 4 of the model's 10 classes, ranked over all 10; data.label_space data ranks over the data's 4"
    assert sum(line.startswith("label space full (detected): the data have 4") for line in
               capsys.readouterr().out.splitlines()) == 1
