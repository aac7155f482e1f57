"""--push-to-hub: everything up to the network call is real; only the Hub's network is mocked."""

from huggingface_hub import HfApi

from cvt_port.cli import main


def test_push_uploads_the_verified_folder(cvt13_checkpoint, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, **kw: calls.append(("create", kw)) or f"https://hf.co/{kw['repo_id']}")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    path, _ = cvt13_checkpoint
    out = tmp_path / "out"
    assert main(["convert", str(path), str(out), "--push-to-hub", "me/cvt-13"]) == 0
    (c, create), (u, upload) = calls
    assert (c, u) == ("create", "upload") and create["repo_id"] == upload["repo_id"] == "me/cvt-13"
    assert upload["folder_path"] == str(out) and (out / "model.safetensors").exists()


def test_push_failure_offline_is_one_line_and_keeps_the_folder(cvt13_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    path, _ = cvt13_checkpoint
    out = tmp_path / "out"
    assert main(["convert", str(path), str(out), "--push-to-hub", "me/cvt-13"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --push-to-hub me/cvt-13: upload failed") and str(out) in err[-1]
    assert (out / "model.safetensors").exists() and (out / "conversion.json").exists()
