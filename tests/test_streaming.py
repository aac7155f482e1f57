"""--streaming (issue 15.2) on local parquet files and tar shards with datasets' streaming=True: the same
images, labels and predictions as without it; --subset chooses from labels and keys alone and decodes only
the images it chose; every image once over simulated ranks; --revision reaches the Hub resolution and the
report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import evaluate.sources.streaming as streaming
from cvt_port.errors import BadInput
from evaluate.api import evaluate_model
from evaluate.pixels.dataset import EvalDataset
from evaluate.sources.inputs import prepare_data
from evaluate.sources.layouts import discover
from evaluate.validation.data_module import ShardSampler
from evaluate.plan import DataSpec, EvalPlan, ModelSpec
from evalkit import make_half_right_imagefolder
from test_webdataset import write_shards

CPU = dict(accelerator="cpu", devices=1, batch_size=8, num_workers=0)


def write_parquet(folder: Path, out: Path, n_files: int) -> list[Path]:
    """The folder's images as a Hub-style parquet split: ``image`` {bytes, path} and an integer ``label``."""
    import datasets

    samples = discover(folder).samples
    out.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    per = -(-len(samples) // n_files)
    files = []
    for k in range(n_files):
        part = samples[k * per:(k + 1) * per]
        ds = datasets.Dataset.from_dict({"image": [{"bytes": Path(s.ref).read_bytes(), "path": Path(s.ref).name}
                                                   for s in part], "label": [s.label for s in part]}, features=features)
        files.append(out / f"validation-{k:05d}-of-{n_files:05d}.parquet")
        ds.to_parquet(files[-1], batch_size=7)  # several row groups per file
    return files


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    make_half_right_imagefolder(root / "val")
    write_parquet(root / "val", root / "parquet", 3)
    write_shards(root / "val", root / "shards", 3)
    return root


@pytest.fixture
def decodes(monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    return opened


def pixels(img):
    return torch.zeros(3, 2, 2, dtype=torch.uint8)


@pytest.mark.parametrize("kind", ["parquet", "shards"])
def test_subset_decodes_only_chosen_images_and_two_ranks_see_each_once(data, decodes, kind):
    plain = prepare_data(DataSpec(source=str(data / kind), subset=30, seed=3), None, 1000)
    inputs = prepare_data(DataSpec(source=str(data / kind), subset=30, seed=3, streaming=True), None, 1000)
    assert inputs.source.layout == f"streaming-{'webdataset' if kind == 'shards' else 'parquet'}"
    assert [(s.image_id, s.label) for s in inputs.samples] == [(s.image_id, s.label) for s in plain.samples]
    assert inputs.source.is_ilsvrc_val and not decodes  # chosen from labels and keys alone
    dataset = EvalDataset(inputs.source, inputs.samples, {"release": pixels})
    seen = []
    for rank in range(2):
        items = [dataset[i] for i in ShardSampler(len(dataset), rank, 2)]
        assert all(item["ok"] for item in items)
        seen += [item["index"] for item in items]
    assert sorted(seen) == list(range(30))
    assert len(decodes) == 30  # each chosen image decoded once (ShardSampler's order reads each stream forward)
    first = plain.source.load_image(plain.samples[5])
    assert list(inputs.source.load_image(inputs.samples[5]).tobytes()) == list(first.tobytes())


def test_parquet_labels_pass_reads_only_the_label_column_and_file_names(data, monkeypatch):
    import pyarrow.parquet as pq

    asked = []
    real_read = pq.ParquetFile.read
    monkeypatch.setattr(pq.ParquetFile, "read", lambda self, columns=None, **k: asked.append(columns) or
                        real_read(self, columns=columns, **k))
    prepare_data(DataSpec(source=str(data / "parquet"), subset=10, streaming=True), None, 1000)
    assert asked == [["label", "image.path"]] * 3


@pytest.mark.parametrize("kind", ["parquet", "shards"])
def test_streamed_run_predicts_what_the_loaded_run_predicts(tiny, data, tmp_path, kind):
    loaded = evaluate_model(model=tiny["hf"], config=tiny["yaml"], data=data / kind, output=tmp_path / "a", **CPU)
    streamed = evaluate_model(model=tiny["hf"], config=tiny["yaml"], data=data / kind, streaming=True,
                              output=tmp_path / "b", **{**CPU, "num_workers": 1})
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (tmp_path / "b" / "predictions.csv").read_bytes()
    assert streamed.record["streaming"] is True and streamed.record["num_samples"] == 101
    assert streamed.record["top1"] == loaded.record["top1"] and streamed.record["real_top1"] == loaded.record["real_top1"]


def test_revision_pins_the_hub_dataset_and_is_recorded(tiny, data, tmp_path, monkeypatch):
    calls = []
    files = sorted(str(p) for p in (data / "parquet").glob("*.parquet"))
    monkeypatch.setattr(streaming, "hub_data_files", lambda *a: calls.append(a) or ("parquet", files))
    result = evaluate_model(model=tiny["hf"], config=tiny["yaml"], data="someone/imagenet-val", streaming=True,
                            data_revision="0123abc", subset=12, output=tmp_path / "o", **CPU)
    assert calls == [("someone/imagenet-val", "validation", "0123abc")]
    assert result.record["data_revision"] == "0123abc" and result.record["num_samples"] == 12
    with pytest.raises(BadInput, match="data.revision"):
        EvalPlan(models=ModelSpec(model="m"), data=DataSpec(source="someone/x", revision="0123abc"))
    with pytest.raises(BadInput, match="data.revision"):
        prepare_data(DataSpec(source=str(data / "parquet"), streaming=True, revision="main"), None, 1000)
    with pytest.raises(BadInput, match="data.streaming"):
        prepare_data(DataSpec(source=str(data / "val"), streaming=True), None, 1000)


# ------------------------------------------------------------------- progress (issue 15.4)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throughput_says_images_per_second_and_time_left_known_or_not():
    from evaluate.runtime.progress import Throughput

    clock = FakeClock()
    known, unknown = Throughput(clock), Throughput(clock)
    known.reset(100)
    unknown.reset(None)
    for t in (known, unknown):
        t.add(10)  # the first batch starts the clock
    assert known.text() == "10/100 img"
    clock.now += 2.0
    for t in (known, unknown):
        t.add(10)
        t.add(10)
    assert known.text() == "30/100 img, 10.0 img/s, 0:00:07 left"  # 70 images at 10/s
    assert unknown.text() == "30 img, 10.0 img/s, time left unknown"


class Tiny(__import__("lightning").LightningModule):
    def validation_step(self, batch, batch_idx):
        return None


@pytest.mark.parametrize("kind", ["rich", "tqdm"])
def test_the_bar_of_a_validation_pass_shows_img_per_s(kind):
    import lightning as L
    from torch.utils.data import DataLoader, IterableDataset

    from evaluate.runtime.progress import RichImagesBar, TQDMImagesBar

    class Unsized(IterableDataset):  # a stream of unknown length
        def __iter__(self):
            for i in range(20):
                yield {"label": torch.tensor(i), "x": torch.zeros(1)}

    clock = FakeClock()

    def tick():
        clock.now += 0.5
        return clock.now

    bar = (RichImagesBar if kind == "rich" else TQDMImagesBar)(clock=tick)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[bar], enable_model_summary=False)
    for data, total in [(list({"label": torch.tensor(i), "x": torch.zeros(1)} for i in range(20)), "/20 img"),
                        (Unsized(), "time left unknown")]:
        trainer.validate(Tiny(), DataLoader(data, batch_size=4), verbose=False)
        text = (bar.progress.tasks[bar.val_progress_bar_id].description if kind == "rich"
                else bar.val_progress_bar.postfix)
        assert "img/s" in text and total in text and text.startswith("Validation" if kind == "rich" else "20")


def test_flags_reach_the_plan_and_misuse_is_one_line_exit_2(tiny, data, tmp_path):
    from evalkit import evaluate_cli

    r = evaluate_cli("--model", tiny["hf"], "--config", tiny["yaml"], "--data", "someone/x", "--data-revision", "main",
                     "--output", tmp_path / "o", "--accelerator", "cpu")
    assert r.returncode == 2 and "--data-revision main: pins a streamed Hub dataset; add --streaming" in r.stderr, r.stderr
    r = evaluate_cli("--model", tiny["hf"], "--config", tiny["yaml"], "--data", data / "val", "--streaming",
                     "--output", tmp_path / "o", "--accelerator", "cpu")
    assert r.returncode == 2 and "--streaming: reads parquet file(s), WebDataset .tar shards" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
