"""evaluate and the code that comes with a model folder (issue 14.3).

``--preprocessing hf`` is the folder's processor as a stock user gets it (no remote code), and report.json
records its class and backend. Code from a folder runs only with ``--trust-remote-code``; a folder cvt_port
wrote (its files' hashes are the package's) is then served by the package's classes, its copy not run.
"""

from __future__ import annotations

import json
import shutil

import pytest

from cvt_port import remote
from evalkit import wnids
from evaluate.api import evaluate_model
from imagegen import make_imagefolder

CPU = dict(accelerator="cpu", num_workers=0, batch_size=64)
MARKER_CODE = '\nimport os\nopen(os.environ["CVT_PORT_TEST_MARKER"], "a").write("{} ran\\n")\n'


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    root = tmp_path_factory.mktemp("rc-data") / "val"
    make_imagefolder(root, wnids(4, step=150), per_class=3)
    return root


@pytest.fixture
def tampered(tiny, tmp_path, monkeypatch):
    """A copy of the tiny converted folder whose remote-code files also write to a marker file when run."""
    folder = tmp_path / "tampered-cvt"
    shutil.copytree(tiny["hf"], folder)
    for name, what in ((remote.MODELING_FILE, "model code"), (remote.PROCESSING_FILE, "processor code")):
        with open(folder / name, "a") as fh:
            fh.write(MARKER_CODE.format(what))
    marker = tmp_path / "marker.txt"
    monkeypatch.setenv("CVT_PORT_TEST_MARKER", str(marker))
    assert not remote.is_package_copy(folder)
    return folder, marker


def run(model, val, tmp_path, **kw):
    return evaluate_model(model=model, data=val, output=tmp_path / "out", **CPU, **kw)


def test_hf_preprocessing_is_the_stock_processor_and_the_report_says_which(tiny, val, tmp_path):
    result = run(tiny["hf"], val, tmp_path, preprocessing="hf")
    expected = {"class": "ConvNextImageProcessorPil", "backend": "pil", "code_from": "transformers"}
    assert result.record["image_processor"] == expected
    assert json.loads((tmp_path / "out" / "report.json").read_text())["image_processor"] == expected


def test_release_preprocessing_records_no_processor(tiny, val, tmp_path):
    assert run(tiny["hf"], val, tmp_path, config=tiny["yaml"]).record["image_processor"] is None


def test_a_cvt_port_folder_is_served_by_the_package_without_running_its_copy(tiny, val, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dyn

    def refuse(*args, **kwargs):
        raise AssertionError(f"a model folder's code was loaded: {args[:1]}")

    monkeypatch.setattr(dyn, "get_class_from_dynamic_module", refuse)
    monkeypatch.setattr("transformers.models.auto.image_processing_auto.get_class_from_dynamic_module", refuse)
    trusted = run(tiny["hf"], val, tmp_path / "a", preprocessing="hf", trust_remote_code=True)
    assert trusted.record["image_processor"] == {"class": "CvtPortImageProcessor", "backend": "pil",
                                                 "code_from": "cvt_port"}
    release = run(tiny["hf"], val, tmp_path / "b", config=tiny["yaml"])
    # the remote processor is the release protocol: the same predictions, image for image
    assert [p.top["converted"] for p in trusted.predictions] == [p.top["converted"] for p in release.predictions]


def test_folder_code_runs_only_with_trust_remote_code(tampered, val, tmp_path):
    folder, marker = tampered
    stock = run(folder, val, tmp_path / "a", preprocessing="hf")
    assert not marker.exists()  # neither the model's nor the processor's copy ran
    assert stock.record["image_processor"]["code_from"] == "transformers"
    trusted = run(folder, val, tmp_path / "b", preprocessing="hf", trust_remote_code=True)
    assert trusted.record["image_processor"] == {"class": "CvtPortImageProcessor", "backend": "pil",
                                                 "code_from": "model folder"}
    # the user trusted the folder: its processor ran; the CvT model is cvt_port's own class whatever the folder holds
    assert marker.read_text() == "processor code ran\n"


def test_the_flag_reaches_the_plan_and_is_off_by_default():
    from evaluate.cli import FLAGS, build_parser, plan_parts

    parse = build_parser().parse_args
    assert plan_parts(parse(["--model", "m", "--data", "d"]))[0].trust_remote_code is False
    assert plan_parts(parse(["--model", "m", "--data", "d", "--trust-remote-code"]))[0].trust_remote_code is True
    assert FLAGS["models.trust_remote_code"] == "--trust-remote-code"
