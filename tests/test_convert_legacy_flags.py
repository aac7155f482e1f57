"""The legacy Hugging Face script's flags: a release script switches by changing only the program it calls.

transformers' convert_cvt_original_pytorch_checkpoint_to_pytorch.py was called as
``--cvt_model cvt-w24 --image_size 384 --cvt_file_name FILE --pytorch_dump_folder_path DIR``;
``python -m cvt_port convert`` takes the same flags, with the same meaning, checked against the weights.
"""

import json
import shutil

import pytest

import cvt_port
from cvt_port.cli import main
from evalkit import cvt_port_cli


def cli(*argv):
    """The command line as a release script runs it (its main, in this process: see evalkit.run_main)."""
    return cvt_port_cli("convert", *argv)


def last_line(r):
    return r.stderr.strip().splitlines()[-1]


def assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_legacy_command_line_converts_like_the_new_one(cvt13_checkpoint, tmp_path):
    path, _ = cvt13_checkpoint
    out = tmp_path / "legacy"
    r = cli("--cvt_model", "cvt-13", "--image_size", "224", "--cvt_file_name", path,
            "--pytorch_dump_folder_path", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert json.loads((out / "conversion.json").read_text())["variant"] == "cvt-13-224"
    new = cvt_port.convert(path, tmp_path / "new")
    for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
        assert (out / name).read_bytes() == (new / name).read_bytes(), name


def test_image_size_that_contradicts_the_release_file_is_one_line_exit_2(cvt13_checkpoint, tmp_path):
    path, _ = cvt13_checkpoint  # CvT-13-224x224-IN-1k.pth: evaluated at 224
    out = tmp_path / "out"
    r = cli("--cvt_model", "cvt-13", "--image_size", "384", "--cvt_file_name", path,
            "--pytorch_dump_folder_path", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = last_line(r)
    assert line.startswith(f"error: {path}: --cvt_model cvt-13 --image_size 384 disagrees")
    assert "cvt-13-224" in line and "evaluated at 224" in line
    assert_nothing_written(tmp_path, out)


def test_model_name_that_contradicts_the_weights_is_one_line_exit_2(cvt13_checkpoint, tmp_path):
    path, _ = cvt13_checkpoint
    renamed = tmp_path / "my-model.pth"  # no release file name: only the weights speak
    shutil.copy(path, renamed)
    out = tmp_path / "out"
    r = cli("--cvt_model", "cvt-w24", "--image_size", "384", "--cvt_file_name", renamed,
            "--pytorch_dump_folder_path", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = last_line(r)
    assert "--cvt_model cvt-w24 --image_size 384 disagrees with the weights" in line
    assert "cvt-13-224" in line and "depth [1, 2, 10]" in line
    assert_nothing_written(tmp_path, out)


def test_legacy_flags_settle_what_the_weights_cannot_say(cvt13_checkpoint, tmp_path, capsys):
    """A renamed CvT-13 file does not say its evaluation size: without a hint it is refused, with
    --image_size 224 it is the 224 variant (and 384 alone still leaves two: 1k and 22k)."""
    path, _ = cvt13_checkpoint
    renamed = tmp_path / "cvt13.pth"
    shutil.copy(path, renamed)
    assert main(["convert", str(renamed), str(tmp_path / "a")]) == 2
    assert "pass --variant" in capsys.readouterr().err
    assert main(["convert", str(renamed), str(tmp_path / "b"), "--cvt_model", "microsoft/cvt-13",
                 "--image_size", "384"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cvt-13-384, cvt-13-384-22k" in err and "pass --variant" in err
    out = cvt_port.convert(renamed, tmp_path / "c", cvt_model="microsoft/cvt-13", image_size=224)
    assert json.loads((out / "conversion.json").read_text())["variant"] == "cvt-13-224"


@pytest.mark.parametrize("argv, says", [
    (["--cvt_model", "cvt-99"], "--cvt_model cvt-99: no variant in configs/ is called that"),
    (["--image_size", "256"], "--image_size 256: no such variant in configs/"),
    (["--image_size", "224", "--variant", "cvt-13-384"], "--image_size 224 disagrees with --variant cvt-13-384"),
])
def test_impossible_flags_are_one_line_exit_2(cvt13_checkpoint, tmp_path, capsys, argv, says):
    path, _ = cvt13_checkpoint
    out = tmp_path / "out"
    code = main(["convert", "--cvt_file_name", str(path), "--pytorch_dump_folder_path", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and says in err[-1], err
    assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("argv, says", [
    (["a.pth", "out", "--pytorch_dump_folder_path", "other"], "out: one path too many"),
    (["a.pth"], "give the checkpoint and the output folder"),
    (["--pytorch_dump_folder_path", "out"], "its legacy default cvtmodels\\CvT-w24-384x384-IN-22k.pth does not exist"),
])
def test_paths_are_given_once(tmp_path, capsys, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    assert main(["convert", *argv]) == 2
    assert says in capsys.readouterr().err.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_legacy_flags():
    r = cli("--help")
    assert r.returncode == 0
    for flag in ("--cvt_model", "--image_size", "--cvt_file_name", "--pytorch_dump_folder_path"):
        assert flag in r.stdout
