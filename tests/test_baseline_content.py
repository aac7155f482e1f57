"""``--baseline`` pairs images by content, not only by id (issue 19.3): ids are file names or ``row-<i>``, so the same
ids can name other images. predictions.csv records each image's label and the sha256 of the bytes it was decoded
from, whatever the source (an image folder, parquet read whole or streamed, the pixel cache), and a baseline whose
images differ under the same ids is refused with one line naming the data each run read (exit status 2)."""

from __future__ import annotations

import csv
import hashlib
import random
import shutil
from pathlib import Path

import pytest

import cvt_port
from evaluate.api import PlanError, evaluate_model
from evaluate.default import CHECKPOINT, DATA, VARIANT
from evaluate.sources.layouts import discover
from evaluate.plan import DataSpec, EvalPlan, ModelSpec, RunSpec
from evaluate.run import build_cache_for

CPU = dict(accelerator="cpu", num_workers=0, batch_size=32, summary=False)
CLASSES = ("0", "1", "7")
LABELS = {str(i): i for i in range(10)}  # the digits model's label2id


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return cvt_port.convert(CHECKPOINT, tmp_path_factory.mktemp("digits") / "hf", variant=VARIANT, log=lambda m: None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of the bundled digits (108 images): an image folder whose labels the model knows."""
    root = tmp_path_factory.mktemp("content") / "val"
    for c in CLASSES:
        shutil.copytree(Path(DATA) / c, root / c)
    return root


def write_parquet(path: Path, samples, with_names: bool) -> Path:
    """The samples as one parquet file: ``image`` {bytes, path} (no path: ids are ``row-<i>``), ``label``."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": Path(s.ref).read_bytes(),
                                                "path": Path(s.ref).name if with_names else None} for s in samples],
                                     "label": [int(Path(s.ref).parent.name) for s in samples]}, features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def content_column(out: Path) -> dict[str, tuple[str, str]]:
    with open(out / "predictions.csv", newline="") as fh:
        return {row["image_id"]: (row["label"], row["sha256"]) for row in csv.DictReader(fh)}


def broken(digits: Path, tmp_path: Path) -> Path:
    """Weights that cannot be loaded: a refusal that comes instead was found before any model loaded."""
    copy = Path(shutil.copytree(digits, tmp_path / "broken"))
    (copy / "model.safetensors").write_bytes(b"\0" * 100)
    return copy


def test_every_source_records_the_sha256_of_the_bytes_read_and_a_cached_run_the_same(digits, folder, tmp_path):
    files = {f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}
    evaluate_model(model=digits, data=folder, output=tmp_path / "plain", **CPU)
    plain = content_column(tmp_path / "plain")
    assert {i: h for i, (_, h) in plain.items()} == files and len(set(files.values())) == len(files)
    # the pixel cache keeps the hashes of the bytes it decoded: a run from it records the same column
    plan = EvalPlan(ModelSpec(model=str(digits)), DataSpec(source=str(folder)), RunSpec(num_workers=0))
    build_cache_for(plan, tmp_path / "cache")
    evaluate_model(model=digits, data=folder, output=tmp_path / "cached", cache_dir=tmp_path / "cache", **CPU)
    assert content_column(tmp_path / "cached") == plain
    # parquet, read whole and streamed: the same bytes, the same hashes (ids are the stored file names there)
    pq = write_parquet(tmp_path / "pq" / "validation-00000-of-00001.parquet", discover(folder, label2id=LABELS).samples, True)
    by_name = {Path(i).name: v for i, v in plain.items()}
    for streaming in [False, True]:  # both readings (a loop, not an assertion)
        out = tmp_path / f"pq-{streaming}"
        evaluate_model(model=digits, data=pq.parent, output=out, streaming=streaming, **CPU)
        assert content_column(out) == by_name


def test_shuffled_parquet_rows_are_refused_before_any_model_loads(digits, folder, tmp_path):
    """The same 108 rows, shuffled: the ids (``row-<i>``) and the image list's sha256 are equal, the images not."""
    samples = discover(folder, label2id=LABELS).samples
    a = write_parquet(tmp_path / "a" / "validation-00000-of-00001.parquet", samples, False)
    shuffled = list(samples)
    random.Random(0).shuffle(shuffled)
    b = write_parquet(tmp_path / "b" / "validation-00000-of-00001.parquet", shuffled, False)
    evaluate_model(model=digits, data=a.parent, output=tmp_path / "base", **CPU)
    with pytest.raises(PlanError) as err:
        evaluate_model(model=broken(digits, tmp_path), data=b.parent, output=tmp_path / "again",
                       baseline=tmp_path / "base", **CPU)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"report.baseline {(tmp_path / 'base').resolve()}: pairs other images")
    differ = sum(x.label != y.label for x, y in zip(samples, shuffled))
    assert f"{differ} of {len(samples)} images carry another label than in the baseline" in msg
    assert f"the baseline read {a.parent} (datasets), this run reads {b.parent} (datasets)" in msg
    assert not (tmp_path / "again").exists()


def test_other_bytes_under_the_same_ids_and_labels_are_refused(digits, folder, tmp_path):
    """Two images of one class exchanged: ids and labels agree, the bytes do not (found once read)."""
    data = Path(shutil.copytree(folder, tmp_path / "val"))
    evaluate_model(model=digits, data=data, output=tmp_path / "base", **CPU)
    x, y = sorted((data / "7").glob("*.png"))[:2]
    bx, by = x.read_bytes(), y.read_bytes()
    x.write_bytes(by)
    y.write_bytes(bx)
    with pytest.raises(PlanError) as err:
        evaluate_model(model=digits, data=data, output=tmp_path / "again", baseline=tmp_path / "base", **CPU)
    msg = str(err.value)
    assert "\n" not in msg and "2 of 108 images have other bytes than in the baseline" in msg
    assert f"(first 7/{x.name}: sha256 {hashlib.sha256(by).hexdigest()[:12]}... here, " \
           f"{hashlib.sha256(bx).hexdigest()[:12]}... in the baseline)" in msg
    assert f"both runs read {data} (imagefolder)" in msg and not (tmp_path / "again").exists()
