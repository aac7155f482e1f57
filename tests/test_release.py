"""A release is made only after the gate passed: the results go into the model card (``--update-card``) and one
Hub commit carries the folder, the card and the reports (``--push-to-hub``). A failed, not-made, stopped or
broken run writes nothing into the card (byte for byte) and uploads nothing.

Only the Hub's network is replaced: ``HfApi.create_repo``/``create_branch``/``create_commit`` record their
arguments instead of calling the Hub. Everything before them is the real code: the card is built with
huggingface_hub's ModelCard/EvalResult, the commit operations (``CommitOperationAdd``, which reads and hashes
each file) are made from the folder and the reports. The figures come from the bundled digits model (trained,
mostly right; the failing copy has two classes of its head swapped)."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard

from evaluate.api import evaluate_model
from evaluate.cli import main
from evaluate.default import CHECKPOINT, DATA, VARIANT
from evaluate.runtime.interrupts import Interrupted
from evaluate.reports.release import card_with_results, eval_results
from evalkit import swap_head_classes
from fsfaults import read_only_folder

CPU = dict(accelerator="cpu", num_workers=0, batch_size=64)
RUN = ["--data", DATA, "--config", VARIANT, "--reference", CHECKPOINT, "--accelerator", "cpu", "--num-workers", "0"]
REPO = "me/cvt-digits"


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def converted(digits):
    """The bundled original checkpoint, converted (with the converter's card): conftest's session folder."""
    return digits


@pytest.fixture(scope="module")
def swapped(tmp_path_factory, converted):
    """The converted model with classes 3 and 5 swapped in its head: a regression the gate must catch."""
    return swap_head_classes(converted, tmp_path_factory.mktemp("swapped") / "hf", 3, 5)


@pytest.fixture
def model(tmp_path, converted):
    """A fresh copy of the converted folder for each test (the card may be rewritten)."""
    return Path(shutil.copytree(converted, tmp_path / "model"))


class Hub:
    """Stands in for the Hub's network only: each HfApi call is recorded; create_commit answers as the Hub
    does (a CommitInfo), or raises ``fail``."""

    def __init__(self, monkeypatch, fail: Exception | None = None):
        self.calls: list[tuple[str, dict]] = []
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_not_a_real_token")

        def create_repo(api, **kw):
            self.calls.append(("create_repo", kw))
            return f"https://huggingface.co/{kw['repo_id']}"

        def create_branch(api, **kw):
            self.calls.append(("create_branch", kw))

        def create_commit(api, **kw):
            self.calls.append(("create_commit", kw))
            if fail is not None:
                raise fail
            url = f"https://huggingface.co/{kw['repo_id']}/commit/0123abc"
            pr = f"https://huggingface.co/{kw['repo_id']}/discussions/7" if kw.get("create_pr") else None
            return CommitInfo(commit_url=url, commit_message=kw["commit_message"], commit_description="",
                              oid="0123abc", pr_url=pr)

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, fn)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


# -- a pass: results on the card, one commit ---------------------------------------------------------------------


def test_a_passing_run_puts_its_results_on_the_card_and_uploads_folder_card_and_reports(model, tmp_path,
                                                                                          monkeypatch, capsys):
    hub = Hub(monkeypatch)
    before = ModelCard.load(model / "README.md")
    out = tmp_path / "out"
    result = evaluate_model(model=model, data=DATA, config=VARIANT, reference=CHECKPOINT, output=out, summary=True,
                            update_card=True, push_to_hub=REPO, create_pr=True, private=True, revision="v1", **CPU)
    assert result.verdict == "pass"
    report = json.loads((out / "report.json").read_text())

    # the card: the measured results as model-index, the converter's data and certificate untouched
    card = ModelCard.load(model / "README.md")
    results = card.data.eval_results
    assert results is not None
    by_name = {r.metric_name: r for r in results}
    assert by_name["top-1 accuracy (%)"].metric_type == "accuracy"
    assert by_name["top-1 accuracy (%)"].metric_value == report["top1"]
    assert by_name["top-5 accuracy (%)"].metric_type == "top_5_accuracy"
    assert by_name["top-5 accuracy (%)"].metric_value == report["top5"]
    assert 90 < report["top1"] < report["top5"] <= 100  # trained, not perfect: figures that could be wrong
    assert len(results) == 2 and report["real_top1"] is None  # digits have no ImageNet-ReaL labels
    for r in results:
        assert (r.task_type, r.dataset_type, r.dataset_split) == ("image-classification", "imagefolder", "validation")
        assert r.dataset_args["num_images"] == report["num_samples"] == 360
        assert r.dataset_args["preprocessing"] == report["preprocessing"] == "release"
        assert "image_list_sha256" not in r.dataset_args  # all images: no subset to name
        assert r.metric_args["precision"] == report["precision"] and r.metric_args["gate"] == report["gate"] == "pass"
        assert r.metric_args["gate_checks"] == [c["name"] for c in report["checks"]]
        assert r.source_url == f"https://huggingface.co/{REPO}/blob/v1/eval/report.json"
    assert card.data.model_name == "cvt-digits"
    assert card.text == before.text  # the parity certificate, byte for byte
    keep = {k: v for k, v in before.data.to_dict().items()}
    assert {k: card.data.to_dict()[k] for k in keep} == keep and keep["license"] == "mit"

    # the upload: repo created private, the branch, one commit as a pull request against it
    assert hub.names() == ["create_repo", "create_branch", "create_commit"]
    (_, repo), (_, branch), (_, commit) = hub.calls
    assert repo == {"repo_id": REPO, "repo_type": "model", "private": True, "exist_ok": True}
    assert branch["repo_id"] == REPO and branch["branch"] == "v1" and branch["exist_ok"] is True
    assert commit["repo_id"] == REPO and commit["revision"] == "v1" and commit["create_pr"] is True
    ops = {op.path_in_repo: op for op in commit["operations"]}
    files = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    reports = {f"eval/{p.name}" for p in out.iterdir() if p.is_file()}
    assert {"eval/report.json", "eval/report.md", "eval/predictions.csv", "eval/per_class.csv"} <= reports
    assert set(ops) == files | reports and "model.safetensors" in ops
    assert ops["README.md"].path_or_fileobj == (model / "README.md").read_bytes()  # the updated card
    for name in ("model.safetensors", "eval/report.json"):
        src = model / name if not name.startswith("eval/") else out / name[5:]
        assert ops[name].upload_info.sha256.hex() == sha(src)
    said = capsys.readouterr().out.strip().splitlines()
    assert said[-2] == f"model card updated with the results: {model / 'README.md'}"
    pr = f"https://huggingface.co/{REPO}/discussions/7"
    assert said[-1] == f"released {len(ops)} files to {REPO} (pull request): {pr}"


def test_results_of_the_same_kind_are_replaced_others_kept(model):
    """A second pass replaces the first's results; a result on another dataset stays. A subset names its images."""
    other = EvalResult(task_type="image-classification", dataset_type="beans", dataset_name="Beans",
                       metric_type="accuracy", metric_value=0.5)
    first = {"num_samples": 360, "top1": 99.0, "top5": 100.0, "real_top1": None, "gate": "pass", "checks": [],
             "precision": "32-true", "attention": "einsum", "preprocessing": "release", "img_size": 32,
             "crop_pct": 1.0, "interpolation": "bicubic", "subset": None, "subset_sha256": "a" * 64,
             "layout": "imagefolder", "data": str(DATA), "variant": None}
    card = card_with_results(model, [other, *eval_results(first)])
    (model / "README.md").write_text(str(card))
    second = dict(first, num_samples=50, top1=98.0, top5=99.5, real_top1=97.0, subset=50, seed=3,
                  subset_sha256="b" * 64)
    results = card_with_results(model, eval_results(second)).data.eval_results
    assert [(r.dataset_type, r.metric_value) for r in results] == [
        ("beans", 0.5), ("imagenet-1k", 98.0), ("imagenet-1k", 99.5), ("imagenet-1k", 97.0)]
    real = results[-1]
    hub = eval_results(dict(second, layout="datasets", data="ILSVRC/imagenet-1k"), split="test")[0]
    assert (hub.dataset_type, hub.dataset_split) == ("ILSVRC/imagenet-1k", "test")  # a Hub dataset names itself
    both = dict(second, preprocessing="both", models=[{"name": "converted", "preprocessing": "release"},
                                                      {"name": "converted (hf)", "preprocessing": "hf"}])
    assert eval_results(both, primary="converted")[0].dataset_args["preprocessing"] == "release"  # the figures' own
    assert (real.metric_name, real.metric_config) == ("ImageNet-ReaL top-1 accuracy (%)", "real")
    assert real.dataset_args == {"num_images": 50, "preprocessing": "release", "img_size": 32, "crop_pct": 1.0,
                                 "interpolation": "bicubic", "subset": True, "image_list_sha256": "b" * 64, "seed": 3}


# -- no pass: nothing ---------------------------------------------------------------------------------------------


def test_a_failing_run_uploads_nothing_and_leaves_the_card_byte_identical(swapped, tmp_path, monkeypatch, capsys):
    model = Path(shutil.copytree(swapped, tmp_path / "model"))
    hub = Hub(monkeypatch)
    card = sha(model / "README.md")
    code = main(["--model", str(model), *map(str, RUN), "--output", str(tmp_path / "out"), "--update-card",
                 "--push-to-hub", REPO, "--create-pr"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert code == 1 and report["gate"] == "fail"
    assert {c["name"]: c["status"] for c in report["checks"]}["agreement"] == "fail"
    assert len(report["top1_differs"]) > 0 and report["top1"] < report["reference_top1"]  # the swap cost images
    assert hub.calls == [] and sha(model / "README.md") == card
    assert ModelCard.load(model / "README.md").data.eval_results is None
    assert "released" not in capsys.readouterr().out


def test_a_not_made_run_uploads_nothing_and_leaves_the_card_byte_identical(model, tmp_path, monkeypatch):
    hub = Hub(monkeypatch)
    card = sha(model / "README.md")
    result = evaluate_model(model=model, data=DATA, config=VARIANT, subset=40, output=tmp_path / "out",
                            update_card=True, push_to_hub=REPO, **CPU)
    assert result.verdict == "not made" and result.num_samples == 40
    assert hub.calls == [] and sha(model / "README.md") == card


def test_a_baseline_check_alone_makes_no_gate_and_no_release(model, tmp_path, monkeypatch):
    """Issue 19.2: ``--subset 1 --baseline b1 --update-card`` passed on the baseline check alone (made at any number
    of images) and rewrote the card with "top-1 100.0". The accuracy checks were not made: not made, no release."""
    hub = Hub(monkeypatch)
    card = sha(model / "README.md")
    evaluate_model(model=model, data=DATA, config=VARIANT, subset=1, output=tmp_path / "b1", **CPU)
    result = evaluate_model(model=model, data=DATA, config=VARIANT, subset=1, output=tmp_path / "out",
                            baseline=tmp_path / "b1", update_card=True, push_to_hub=REPO, **CPU)
    status = {c["name"]: c["status"] for c in result.checks}
    assert status == {"reference_top1": "not made", "agreement": "not made", "recorded_top1": "not made",
                      "baseline": "pass"}
    assert result.verdict == "not made" and result.exit_status == 3 and result.num_samples == 1
    assert hub.calls == [] and sha(model / "README.md") == card


@pytest.mark.parametrize("stop, status", [(Interrupted(signal.SIGTERM), 143), (KeyboardInterrupt(), 130),
                                          (ZeroDivisionError("bug"), 4)])
def test_an_interrupted_or_broken_run_uploads_nothing_and_leaves_the_card(model, tmp_path, monkeypatch, stop, status):
    import evaluate.validation.trainer

    hub = Hub(monkeypatch)
    card = sha(model / "README.md")

    def stopped(*args, **kwargs):
        raise stop

    monkeypatch.setattr(evaluate.validation.trainer, "run_validation", stopped)
    code = main(["--model", str(model), *map(str, RUN), "--output", str(tmp_path / "out"), "--update-card",
                 "--push-to-hub", REPO])
    assert code == status and hub.calls == [] and sha(model / "README.md") == card


# -- a pass whose upload fails -----------------------------------------------------------------------------------


def test_an_upload_that_fails_after_a_pass_is_one_line_and_exit_3(model, tmp_path, monkeypatch, capsys):
    hub = Hub(monkeypatch, fail=ConnectionError("Max retries exceeded with url: /api/repos/create\nmore"))
    card = sha(model / "README.md")
    code = main(["--model", str(model), *map(str, RUN), "--output", str(tmp_path / "out"), "--push-to-hub", REPO])
    assert code == 3 and json.loads((tmp_path / "out" / "report.json").read_text())["gate"] == "pass"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: --push-to-hub {REPO}: upload failed (ConnectionError: Max retries exceeded with url: "
                       "/api/repos/create); the gate PASSED and the reports are written, but nothing was released; "
                       "run again to upload")
    assert hub.names() == ["create_repo", "create_commit"]
    # without --update-card the local card stays as it was; the card that was to be uploaded had the results
    assert sha(model / "README.md") == card
    (_, commit) = hub.calls[1]
    sent = {op.path_in_repo: op for op in commit["operations"]}["README.md"].path_or_fileobj
    assert ModelCard(sent.decode()).data.eval_results[0].metric_value == json.loads(
        (tmp_path / "out" / "report.json").read_text())["top1"]


def test_a_signal_during_the_upload_says_the_gate_passed_and_exits_130(model, tmp_path, monkeypatch, capsys):
    hub = Hub(monkeypatch, fail=KeyboardInterrupt())
    code = main(["--model", str(model), *map(str, RUN), "--output", str(tmp_path / "out"), "--update-card",
                 "--push-to-hub", REPO])
    assert code == 130 and hub.names() == ["create_repo", "create_commit"]
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: SIGINT: stopped during the upload to {REPO}, after the gate passed (reports written); the Hub "
        "commit is all or nothing: check the repo and run again")
    # the card was written (the gate passed) before the upload began
    assert ModelCard.load(model / "README.md").data.eval_results[0].metric_value == json.loads(
        (tmp_path / "out" / "report.json").read_text())["top1"]


# -- found before the first batch ----------------------------------------------------------------------------------


@pytest.fixture
def no_pass(monkeypatch):
    """The pass must not start: a check before it should have stopped the run."""
    import evaluate.validation.trainer

    def forbidden(*args, **kwargs):
        raise AssertionError("the pass started")

    monkeypatch.setattr(evaluate.validation.trainer, "run_validation", forbidden)


def run_cli(capsys, *args) -> tuple[int, list[str]]:
    code = main([*map(str, args)])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("extra, line", [
    (["--create-pr"], "error: --create-pr: only applies to an upload; add --push-to-hub"),
    (["--private", "--revision", "v1"], "error: --private/--revision: only applies to an upload; add --push-to-hub"),
    (["--push-to-hub", "not a repo"], "error: --push-to-hub not a repo: is not a Hub repo id ("),
    (["--push-to-hub", "cvt-digits"], "error: --push-to-hub cvt-digits: is not a Hub repo id (a repo id names its "
                                      "owner); give OWNER/NAME"),
    (["--push-to-hub", REPO], f"error: --push-to-hub {REPO}: cannot upload offline (HF_HUB_OFFLINE is set); unset it "
                              "or leave the upload out"),
])
def test_release_options_are_checked_before_the_pass(model, tmp_path, capsys, no_pass, extra, line):
    card = sha(model / "README.md")
    code, err = run_cli(capsys, "--model", model, *RUN, "--output", tmp_path / "out", *extra)
    assert code == 2 and len(err) == 1 and err[0].startswith(line)
    assert sha(model / "README.md") == card and not (tmp_path / "out").exists()


def test_no_token_is_found_before_the_pass(model, tmp_path, capsys, monkeypatch, no_pass):
    Hub(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    code, err = run_cli(capsys, "--model", model, *RUN, "--output", tmp_path / "out", "--push-to-hub", REPO)
    assert code == 2 and err == [f"error: --push-to-hub {REPO}: no Hugging Face token: log in with `hf auth login` "
                                 "or set HF_TOKEN"]


@pytest.mark.parametrize("flag", ["--update-card", "--push-to-hub"])
def test_a_hub_id_has_no_card_to_write_or_folder_to_upload(tmp_path, capsys, monkeypatch, no_pass, flag):
    Hub(monkeypatch)
    args = [flag] if flag == "--update-card" else [flag, REPO]
    code, err = run_cli(capsys, "--model", "microsoft/cvt-13", *RUN, "--output", tmp_path / "out", *args)
    assert code == 2 and err == [f"error: {flag}: needs a local model folder, and microsoft/cvt-13 is not one (a Hub "
                                 "id's card is the Hub's to change): download or convert the model into a folder and "
                                 "evaluate that"]


def test_a_read_only_model_folder_is_found_before_the_pass(model, tmp_path, capsys, no_pass):
    card = sha(model / "README.md")
    with read_only_folder(model):
        code, err = run_cli(capsys, "--model", model, *RUN, "--output", tmp_path / "out", "--update-card")
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: --update-card: cannot write the model card in {model}: ")
    assert err[0].endswith("make the folder writable or leave the card alone") and sha(model / "README.md") == card


def test_a_card_that_does_not_parse_is_found_before_the_pass(model, tmp_path, capsys, no_pass):
    (model / "README.md").write_text("---\nlicense: [mit\n---\n# card\n")
    card = sha(model / "README.md")
    code, err = run_cli(capsys, "--model", model, *RUN, "--output", tmp_path / "out", "--update-card")
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {model / 'README.md'}: the model card does not "
                                                             "parse (")
    assert sha(model / "README.md") == card
