"""Bad input: one clear line naming the culprit, exit status 2, nothing written. Parity failure: exit 1."""

import errno
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvt_port.cli import main
from cvt_port.errors import EXIT_STATUS_HELP
from evalkit import cvt_port_cli
from fsfaults import read_only_folder


class RunsCode:
    """A pickle payload that would create a file if unpickling ran it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def run(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture
def sd(cvt13_checkpoint):
    return dict(torch.load(cvt13_checkpoint[0], weights_only=True))


def save(tmp_path, obj, name="CvT-13-224x224-IN-1k.pth"):
    p = tmp_path / name
    torch.save(obj, p)
    return p


def test_missing_path(tmp_path, capsys):
    code, err = run(capsys, tmp_path / "nope.pth", tmp_path / "out")
    assert code == 2 and "nope.pth: no such file" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_not_a_torch_file(tmp_path, capsys):
    p = tmp_path / "notes.pth"
    p.write_text("these are not weights\n" * 10)
    code, err = run(capsys, p, tmp_path / "out")
    assert code == 2 and "notes.pth: is not a PyTorch checkpoint" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_truncated_file(cvt13_checkpoint, tmp_path, capsys):
    data = cvt13_checkpoint[0].read_bytes()
    p = tmp_path / "CvT-13-224x224-IN-1k.pth"
    p.write_bytes(data[: len(data) // 2])
    code, err = run(capsys, p, tmp_path / "out")
    assert code == 2 and "is truncated or damaged" in err and str(p) in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    p = save(tmp_path, {"stage0.patch_embed.proj.weight": RunsCode(str(marker))}, "evil.pth")
    code, err = run(capsys, p, tmp_path / "out")
    assert code == 2 and "refused to load" in err and "nothing in it was run" in err
    assert not marker.exists()
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_state_dict_of_another_model(tmp_path, capsys):
    p = save(tmp_path, torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), "other.pth")
    code, err = run(capsys, p, tmp_path / "out")
    assert code == 2 and "does not look like an original CvT checkpoint" in err and "stage0.patch_embed.proj.weight" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_missing_key_is_named(sd, tmp_path, capsys):
    del sd["stage2.blocks.4.attn.conv_proj_k.bn.running_var"]
    code, err = run(capsys, save(tmp_path, sd), tmp_path / "out")
    assert code == 2 and "missing key 'stage2.blocks.4.attn.conv_proj_k.bn.running_var'" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_extra_key_is_named(sd, tmp_path, capsys):
    sd["stage1.blocks.0.attn.extra.weight"] = torch.zeros(3)
    code, err = run(capsys, save(tmp_path, sd), tmp_path / "out")
    assert code == 2 and "unexpected key 'stage1.blocks.0.attn.extra.weight'" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_wrong_shape_is_named(sd, tmp_path, capsys):
    sd["stage2.blocks.3.mlp.fc1.weight"] = torch.zeros(1536, 380)
    code, err = run(capsys, save(tmp_path, sd), tmp_path / "out")
    assert code == 2 and "key 'stage2.blocks.3.mlp.fc1.weight' has shape [1536, 380], expected [1536, 384]" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_variant_that_disagrees_with_the_weights(cvt13_checkpoint, tmp_path, capsys):
    code, err = run(capsys, cvt13_checkpoint[0], tmp_path / "out", "--variant", "cvt-21-224")
    assert code == 2 and "--variant cvt-21-224 disagrees with the weights: depth [1, 2, 10] in the weights, [1, 4, 16]" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_unknown_variant_name(cvt13_checkpoint, tmp_path, capsys):
    code, err = run(capsys, cvt13_checkpoint[0], tmp_path / "out", "--variant", "cvt-99")
    assert code == 2 and "unknown variant 'cvt-99'" in err


def test_ambiguous_weights_ask_for_variant(cvt13_checkpoint, tmp_path, capsys):
    p = tmp_path / "my-model.pth"
    p.write_bytes(cvt13_checkpoint[0].read_bytes())
    code, err = run(capsys, p, tmp_path / "out")
    assert code == 2 and "pass --variant" in err and "cvt-13-224" in err and "cvt-13-384" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_output_folder_that_exists(cvt13_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    code, err = run(capsys, cvt13_checkpoint[0], out)
    assert code == 2 and "pass --overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["x"]


def test_parity_failure_exits_1_and_saves_nothing(sd, tmp_path, capsys):
    sd["stage2.blocks.9.mlp.fc2.weight"][0, 0] = float("nan")  # a damaged weight
    code, err = run(capsys, save(tmp_path, sd), tmp_path / "out")
    assert code == 1 and "differs from the original" in err and "nothing was saved" in err
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_errors_print_no_traceback(tmp_path):
    r = cvt_port_cli("convert", tmp_path / "x.pth", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and len(r.stderr.strip().splitlines()) <= 2


def test_usage_error_exits_2(tmp_path):
    r = cvt_port_cli("convert")
    assert r.returncode == 2 and "CHECKPOINT" in r.stderr


# --------------------------------------------------------------------------- the exit-status contract (issue 9)

BUNDLED = Path(__file__).resolve().parent.parent / "evaluate" / "bundled" / "cvt-tiny-digits.pth"


def convert_cli(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cvt_port", "convert", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, **kw)


def test_malicious_pickle_of_another_protocol_prints_one_line_and_no_torch_warning(tmp_path):
    """A pickle (protocol 4) whose loading would call os.system: torch warns about the protocol before it
    refuses the file; the user sees our progress line and our one-line error, nothing else."""
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    p.write_bytes(pickle.dumps({"stage0.patch_embed.proj.weight": RunsShell(f"touch {marker}")}, protocol=4))
    r = convert_cli(p, tmp_path / "out")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1].startswith(f"error: {p}: refused to load"), r.stderr
    assert len(lines) == 2 and lines[0].startswith("[1/5] reading"), r.stderr  # no "Detected pickle protocol"
    assert not marker.exists()
    assert_nothing_written(tmp_path, tmp_path / "out")


class RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_read_only_destination_is_one_line_before_reading_the_checkpoint(tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        code, err = run(capsys, BUNDLED, ro / "out", "--variant", "cvt-tiny-digits")
        assert code == 2 and err.startswith(f"error: {ro / 'out'}: cannot write in {ro}: "), err
        assert err.endswith("; choose a writable folder"), err  # "Permission denied" (or as root: not permitted)
        assert list(ro.iterdir()) == []
    assert "[1/5]" not in capsys.readouterr().err  # refused before the checkpoint is read


def test_destination_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    code, err = run(capsys, BUNDLED, tmp_path / "a-file" / "out", "--variant", "cvt-tiny-digits")
    a_file = tmp_path / "a-file"
    assert code == 2 and err == f"error: {a_file / 'out'}: {a_file} is not a folder; choose another path"


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import cvt_port.conversion as conversion

    def full(mapped, folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.safetensors"))

    monkeypatch.setattr(conversion, "write_weights", full)
    code, err = run(capsys, BUNDLED, tmp_path / "out", "--variant", "cvt-tiny-digits")
    assert code == 2 and err.startswith(f"error: {tmp_path / 'out'}: cannot write there: No space left on device")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_unexpected_exception_is_exit_4_with_one_line_and_the_traceback_in_a_file(tmp_path, capsys, monkeypatch):
    import cvt_port.conversion as conversion

    def bug(*a, **k):
        raise ZeroDivisionError("a bug in the parity check")

    monkeypatch.setattr(conversion, "measure_parity", bug)
    code = main(["convert", str(BUNDLED), str(tmp_path / "out"), "--variant", "cvt-tiny-digits"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert err[-1].startswith("internal error: ZeroDivisionError: a bug in the parity check (full traceback in ")
    trace = Path(err[-1].split("full traceback in ")[1].split(";")[0])
    text = trace.read_text()
    trace.unlink()
    assert text.startswith("Traceback") and "in bug" in text and "ZeroDivisionError: a bug in the parity check" in text
    assert "Traceback" not in "\n".join(err)
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("sig,status,word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted (SIGINT)")])
def test_a_signal_mid_conversion_exits_128_plus_signal_and_leaves_no_folder(cvt13_checkpoint, tmp_path, sig,
                                                                            status, word):
    """SIGTERM (a scheduler's time limit) and Ctrl-C arrive while model.safetensors is being written
    into the temporary folder: the status says so, and neither the output nor the temporary folder remains."""
    p = subprocess.Popen([sys.executable, "-m", "cvt_port", "convert", str(cvt13_checkpoint[0]), str(tmp_path / "out")],
                         stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in p.stderr:
            if line.startswith("[3/5]"):  # the temporary folder exists and the weights are being written
                seen = [q.name for q in tmp_path.iterdir()]
                p.send_signal(sig)
                break
        rest = p.stderr.read().strip().splitlines()
        code = p.wait(timeout=120)
    finally:
        p.kill()
    assert seen and seen[0].startswith(".out.tmp-")
    assert code == status and rest == [f"{word}: stopped, no half-written folder left"]
    assert list(tmp_path.iterdir()) == []


def test_help_states_the_exit_status_contract(capsys):
    for argv in (["--help"], ["convert", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert " ".join(EXIT_STATUS_HELP.split()) in " ".join(capsys.readouterr().out.split())


def test_a_bad_variant_config_is_one_line_before_the_checkpoint_is_read(tmp_path, capsys):
    bad = tmp_path / "digits.yaml"
    text = (Path(__file__).resolve().parent.parent / "configs" / "cvt-tiny-digits.yaml").read_text()
    bad.write_text(text.replace("interpolation: bicubic", "interpolation: bicubik"))
    code = main(["convert", str(BUNDLED), str(tmp_path / "out"), "--variant", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {bad}: key 'preprocessing.interpolation' = 'bicubik': must be one of "
                                 "nearest, lanczos, bilinear, bicubic, box, hamming"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.yaml"]
