"""Trackers: ``--logger csv|tensorboard|wandb|mlflow`` sends the final figures (the values in report.json) and
the run's settings to Lightning's loggers, under ``--log-dir`` (not in the reports' folder, which is one run's
and replaced whole); the module logs them with ``log_dict``, so ``trainer.validate`` returns them too. A logger
whose package is missing is refused with one line before anything is loaded."""

from __future__ import annotations

import csv
import importlib.util
import json
import struct

import lightning as L
import pytest
import yaml

from evaluate.api import evaluate_model
from evaluate.cli import main
from evaluate.default import CHECKPOINT, DATA, VARIANT
from evaluate.validation.data_module import EvalDataModule
from evaluate.validation.lightning_module import EvalModule
from evaluate.validation.metrics import metric_name
from evaluate.models.folders import Candidate
from evaluate.plan import parse_loggers
from evaluate.pixels.preprocess import Normalization
from test_step_syncs import NUM_CLASSES, Photos, linear

FIGURES = ("top1", "top5", "agreement_with_original", "max_abs_logit_diff")


def tensorboard_scalars(folder) -> dict[str, float]:
    """Every scalar in the event files under ``folder``, read as TensorBoard does (TFRecord framing, Event
    protos from tensorboardX's own definitions)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    scalars[v.tag] = v.simple_value
    return scalars


def float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


@pytest.fixture(scope="module")
def logged_run(digits, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("logged")
    result = evaluate_model(model=digits, data=DATA, config=VARIANT, reference=CHECKPOINT, with_stock=True,
                            accelerator="cpu", num_workers=0, batch_size=64, output=tmp / "out",
                            logger="csv,tensorboard", log_dir=tmp / "logs")
    return result, json.loads((tmp / "out" / "report.json").read_text()), tmp


def test_csv_and_tensorboard_receive_report_jsons_figures(logged_run):
    result, report, tmp = logged_run
    logs = tmp / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["csv", "tensorboard"]
    assert sorted(p.name for p in (tmp / "out").iterdir()) == ["per_class.csv", "predictions.csv", "report.html", "report.json",
                                                               "report.md"]  # nothing of the loggers in there
    with open(logs / "csv" / "version_0" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    row = rows[0]
    scalars = tensorboard_scalars(logs / "tensorboard" / "version_0")
    expected = {"images": float(report["num_samples"])}
    for m in report["models"]:
        for figure in FIGURES:
            if m[figure] is not None:
                expected[f"{metric_name(m['name'])}/{figure}"] = float(m[figure])
    # converted, original and the stock class; the stock class's logits differ: the figures are not trivial
    assert {"converted/top1", "original/top1", "stock/max_abs_logit_diff"} <= set(expected)
    assert 0 < expected["stock/max_abs_logit_diff"] and 90 < expected["converted/top1"] < 100
    assert set(row) == {*expected, "epoch", "step"} and row["epoch"] == "0"  # Lightning adds the epoch
    assert {k: float(row[k]) for k in expected} == expected  # exactly report.json's values
    assert scalars == {**{k: float32(v) for k, v in expected.items()}, "epoch": 0.0}  # TensorBoard stores float32
    for folder in (logs / "csv" / "version_0", logs / "tensorboard" / "version_0"):
        hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
        assert hparams["variant"] == VARIANT and hparams["images"] == 360 and hparams["precision"] == "32-true"
        assert hparams["reference"] == str(CHECKPOINT)


def test_a_second_run_gets_its_own_version(digits, logged_run, tmp_path):  # noqa: F811
    _, _, tmp = logged_run
    evaluate_model(model=digits, data=DATA, config=VARIANT, accelerator="cpu", num_workers=0, subset=20,
                   logger=["csv"], log_dir=tmp_path)
    evaluate_model(model=digits, data=DATA, config=VARIANT, accelerator="cpu", num_workers=0, subset=30,
                   logger=["csv"], log_dir=tmp_path)
    images = [next(csv.DictReader(open(tmp_path / "csv" / f"version_{v}" / "metrics.csv")))["images"] for v in (0, 1)]
    assert images == ["20.0", "30.0"]


def test_trainer_validate_returns_the_logged_figures():
    models = [Candidate("converted (hf)", "exact", linear(0), "release"),
              Candidate("original", "reference", linear(1), "release")]
    module = EvalModule(models, {"release": Normalization((0.5,) * 3, (0.25,) * 3)}, NUM_CLASSES, reference="original")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    [logged] = trainer.validate(module, datamodule=EvalDataModule(Photos(21), batch_size=8, num_workers=0),
                                verbose=False)
    res = module.results["models"]
    assert logged == {"images": 21.0, "converted_hf/top1": res["converted (hf)"].top1,
                      "converted_hf/top5": res["converted (hf)"].top5,
                      "converted_hf/agreement_with_original": res["converted (hf)"].agreement,
                      "converted_hf/max_abs_logit_diff": res["converted (hf)"].max_abs_logit_diff,
                      "original/top1": res["original"].top1, "original/top5": res["original"].top5}
    assert 0 < res["converted (hf)"].agreement < 1


@pytest.mark.parametrize("name,package", [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboardX")])
def test_a_logger_without_its_package_is_one_line_before_anything_loads(monkeypatch, capsys, tmp_path, name, package):
    real = importlib.util.find_spec
    missing = {"wandb", "mlflow", "tensorboard", "tensorboardX"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in missing else real(n, *a))
    # the model and data do not exist: the logger's error comes first, before anything is read
    rc = main(["--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data"), "--accelerator", "cpu",
               "--output", str(tmp_path / "out"), "--logger", f"csv,{name}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: --logger {name}: needs the {package} package: pip install {package}"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "lightning_logs").exists()


def test_logger_names_are_checked_with_the_plan(capsys, tmp_path):
    assert parse_loggers(["csv,tensorboard", "csv", " mlflow "]) == ("csv", "tensorboard", "mlflow")
    assert parse_loggers("csv") == ("csv",) and parse_loggers(None) == ()
    rc = main(["--model", str(tmp_path), "--data", str(tmp_path), "--logger", "csv,tensorbored"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --logger csv,tensorbored: choose each of csv, tensorboard, wandb, mlflow at "
                               "most once"]
    (tmp_path / "file").write_text("x")
    rc = main(["--model", str(tmp_path / "nope"), "--data", str(tmp_path), "--logger", "csv", "--log-dir",
               str(tmp_path / "file"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: --log-dir {tmp_path / 'file'}: exists and is not "
                                                           "a folder"), err


def test_no_logger_by_default_nothing_written(digits, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    evaluate_model(model=digits, data=DATA, config=VARIANT, accelerator="cpu", num_workers=0, subset=20)
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_reader_reads_what_tensorboardx_writes(tmp_path):
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path)) as w:
        w.add_scalar("a/b", 0.25, 0)
        w.add_scalar("c", 3.0, 1)
    assert tensorboard_scalars(tmp_path) == {"a/b": 0.25, "c": 3.0}


def test_two_processes_with_uneven_batches_log_once_without_a_collective(tmp_path):
    """9 images in batches of 2 on 2 processes: rank 0 reads 3 batches, rank 1 two. Logging per step with a
    sync would hang or fail here; the figures are logged once, by rank 0's loggers, and equal report.json's."""
    from test_faults import make_digits, run2

    model = cvt_port_convert(tmp_path / "hf")
    data = make_digits(tmp_path / "val", per_class=3)  # 9 images
    r = run2(model, data, tmp_path / "out", "--logger", "csv,tensorboard", "--log-dir", tmp_path / "logs")
    assert r.returncode == 1 and "GATE: FAIL" in r.stdout, r.stderr[-3000:]  # one of the 9 is wrong: 88.9%
    assert "Warning" not in r.stderr and "sync_dist" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["world_size"] == 2 and report["num_samples"] == 9 and report["top1"] < 100
    with open(tmp_path / "logs" / "csv" / "version_0" / "metrics.csv", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert float(row["images"]) == 9 and float(row["converted/top1"]) == report["top1"]
    assert float(row["original/top1"]) == report["reference_top1"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["csv", "tensorboard"]
    assert tensorboard_scalars(tmp_path / "logs" / "tensorboard")["converted/top1"] == float32(report["top1"])


def cvt_port_convert(folder):
    import cvt_port

    return cvt_port.convert(CHECKPOINT, folder, variant=VARIANT, log=lambda m: None)


def test_a_process_alone_logs_whatever_rank_lightning_read_when_imported(digits, tmp_path, monkeypatch):  # noqa: F811
    """Lightning reads its logging rank (``rank_zero_only.rank``) from the environment once, when first imported,
    and that import now comes after the launch is checked: in a long-lived process it may have read another
    launch's ``SLURM_PROCID=1`` (CI's order of test files did). A run alone still logs: the Trainer's rank decides."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    evaluate_model(model=digits, data=DATA, config=VARIANT, accelerator="cpu", num_workers=0, batch_size=64,
                   subset=30, logger="csv", log_dir=tmp_path / "logs")
    with open(tmp_path / "logs" / "csv" / "version_0" / "metrics.csv", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert float(row["images"]) == 30
