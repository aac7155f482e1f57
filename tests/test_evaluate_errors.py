"""Bad input to python -m evaluate: one clear line naming the culprit, exit status 2."""

from __future__ import annotations

import json
import shutil

import pytest

from evaluate.cli import main
from evalkit import evaluate_cli, wnids
from imagegen import make_flat, make_imagefolder, write_corrupt, write_truncated_jpeg


@pytest.fixture(scope="module")
def good_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("good") / "val"
    make_imagefolder(root, wnids(3), per_class=2)
    return root


def run(capsys, tiny, data, *more, tmp):
    code = main(["--model", str(tiny["hf"]), "--config", str(tiny["yaml"]), "--data", str(data),
                 "--output", str(tmp / "out"), "--accelerator", "cpu", "--num-workers", "0", *map(str, more)])
    err = [l for l in capsys.readouterr().err.strip().splitlines() if l.startswith("error:")]
    return code, (err[-1] if err else "")


def test_data_path_missing(tiny, tmp_path, capsys):
    code, err = run(capsys, tiny, tmp_path / "nowhere", tmp=tmp_path)
    assert code == 2 and "nowhere" in err


def test_data_folder_empty(tiny, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, tiny, tmp_path / "empty", tmp=tmp_path)
    assert code == 2 and "empty" in err


def test_unknown_layout(tiny, tmp_path, capsys):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "a.txt").write_text("x")
    code, err = run(capsys, tiny, d, tmp=tmp_path)
    assert code == 2 and str(d) in err


def test_folder_name_that_is_no_wnid_nor_label(tiny, tmp_path, capsys):
    make_imagefolder(tmp_path / "val", [wnids(1)[0], "n99999999x"], per_class=1)
    code, err = run(capsys, tiny, tmp_path / "val", tmp=tmp_path)
    assert code == 2 and "n99999999x" in err


def test_labels_file_that_does_not_cover_the_images(tiny, tmp_path, capsys):
    make_flat(tmp_path / "flat", [1, 2, 3])
    (tmp_path / "labels.txt").write_text("n01440764\n")
    code, err = run(capsys, tiny, tmp_path / "flat", "--labels-file", tmp_path / "labels.txt", tmp=tmp_path)
    assert code == 2 and "ILSVRC2012_val_00000002" in err and "labels.txt" in err


@pytest.mark.parametrize("writer", [write_corrupt, write_truncated_jpeg])
def test_bad_image_fails_by_default_and_is_named(tiny, good_data, tmp_path, capsys, writer):
    data = tmp_path / "val"
    shutil.copytree(good_data, data)
    bad = writer(data / wnids(1)[0] / "broken.JPEG")
    code, err = run(capsys, tiny, data, tmp=tmp_path)
    assert code == 2 and "broken.JPEG" in err and "--skip-bad-images" in err
    assert not (tmp_path / "out" / "report.json").exists()
    code, _ = run(capsys, tiny, data, "--skip-bad-images", "--reference", tiny["pth"], tmp=tmp_path)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert code == 0 and rep["num_bad_images"] == 1 and rep["num_samples"] == 6
    assert bad.name in rep["bad_images"][0]


def test_model_folder_without_weights(tiny, good_data, tmp_path, capsys):
    empty = tmp_path / "noweights"
    empty.mkdir()
    shutil.copy(tiny["hf"] / "config.json", empty)
    code = main(["--model", str(empty), "--config", str(tiny["yaml"]), "--data", str(good_data)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "no weights" in err and str(empty) in err


def test_subset_larger_than_the_data(tiny, good_data, tmp_path, capsys):
    code, err = run(capsys, tiny, good_data, "--subset", "7", tmp=tmp_path)
    assert code == 2 and "--subset 7" in err and "6" in err


def test_hub_model_id_offline_is_one_line(good_data, tmp_path):
    r = evaluate_cli("--model", "microsoft/cvt-13", "--config", "cvt-13-224", "--data", good_data,
                     "--output", tmp_path, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: --model microsoft/cvt-13: cannot read it from the Hub")


def test_reference_file_missing(tiny, good_data, tmp_path, capsys):
    code, err = run(capsys, tiny, good_data, "--reference", tmp_path / "x.pth", tmp=tmp_path)
    assert code == 2 and "x.pth" in err


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as e:
        main(["--batch-size", "many"])
    assert e.value.code == 2


@pytest.mark.parametrize("flags", [["--precision", "fp7"], ["--accelerator", "tpu"], ["--strategy", "nonsense"]])
def test_impossible_device_settings_are_bad_input(tiny, good_data, tmp_path, capsys, flags):
    code = main(["--model", str(tiny["hf"]), "--config", str(tiny["yaml"]), "--data", str(good_data),
                 "--output", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: --accelerator/--devices/--num-nodes/--strategy/--precision:")
