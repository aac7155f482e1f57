"""The converter's own --push-to-hub uploads after the parity check only: its help and its output say that
the model's accuracy was not checked, and point to the accuracy gate (`python -m evaluate ... --reference`)."""

from huggingface_hub import HfApi

from cvt_port.cli import main
from evalkit import cvt_port_cli


def test_help_says_the_upload_is_not_accuracy_checked():
    r = cvt_port_cli("convert", "--help")
    flat = " ".join(r.stdout.split())
    assert r.returncode == 0 and "--push-to-hub REPO_ID" in flat
    assert "ACCURACY IS NOT CHECKED by this upload" in flat and "python -m evaluate --model OUTPUT_DIR --reference" in flat


def test_output_says_so_before_and_after_the_upload(cvt13_checkpoint, tmp_path, monkeypatch, capsys):
    said_before_upload = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, **kw: f"https://hf.co/{kw['repo_id']}")
    monkeypatch.setattr(HfApi, "upload_folder",
                        lambda self, **kw: said_before_upload.append(capsys.readouterr().err))
    path, _ = cvt13_checkpoint
    assert main(["convert", str(path), str(tmp_path / "out"), "--push-to-hub", "me/cvt-13"]) == 0
    (before,) = said_before_upload
    assert before.strip().splitlines()[-1].startswith(
        "warning: uploading a model whose accuracy was not checked") and "me/cvt-13" in before
    after = capsys.readouterr().err.strip().splitlines()
    assert after == ["pushed to https://hf.co/me/cvt-13 (parity checked; accuracy NOT checked)"]
