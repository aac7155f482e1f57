"""Several models in one job (issue 15.3): ``--model A --model B`` / ``--models-file`` evaluates every model on the
same batches; each model's record, verdict and predictions are what a run of it alone gives; each image is
decoded once and preprocessed once per distinct preprocessing; the exit status is the worst verdict.

Three models, all from the colour-reading tiny CvT (evalkit): A as made; B with the head rows of two colour
classes swapped (A and B disagree on the images of those colours); C is A's weights evaluated under another
preprocessing (192 pixels instead of 224: a second protocol). Their configs make one verdict each: A's recorded
top-1 is its own measured figure on exactly these 101 images (the full set: an exact pass), B's is 99%
(fail: far outside the interval), C's is unknown (not made).
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import yaml

from evalkit import CLASSES, evaluate_cli, make_half_right_imagefolder, tiny_img_size

from evaluate.api import ManyEvalResult, PlanError, evaluate_model

CPU = dict(accelerator="cpu", num_workers=0, batch_size=16)
CLI_CPU = ["--accelerator", "cpu", "--num-workers", "0", "--batch-size", "16"]
TIMING = {"images_per_second", "pass_seconds", "provenance"}  # of the pass, not of the model
C_SIZE = 96  # model C's input size: its own preprocessing, not the tiny config's


def _config(tiny, path, name, **changes):
    cfg = yaml.safe_load(tiny["yaml"].read_text())
    cfg["name"] = name
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _swap_head_rows(src, dst, a: int, b: int):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    for key in ("classifier.weight", "classifier.bias"):
        t = weights[key].clone()
        t[[a, b]] = t[[b, a]]
        weights[key] = t
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def job(tiny, tmp_path_factory):
    """The three models and their configs, each run alone, then all three in one job (images counted)."""
    root = tmp_path_factory.mktemp("multi")
    val = root / "val"
    make_half_right_imagefolder(val)
    a = tiny["hf"]
    b = _swap_head_rows(a, root / "b", CLASSES[0], CLASSES[1])
    c = shutil.copytree(a, root / "c")
    plain_a = _config(tiny, root / "plain-a.yaml", "tiny-a")
    alone_a = evaluate_model(model=a, config=plain_a, data=val, **CPU)
    cfg = {
        "a": _config(tiny, root / "a.yaml", "tiny-a", reference={"top1": alone_a.top1, "num_samples": 101}),
        "b": _config(tiny, root / "b.yaml", "tiny-b", reference={"top1": 99.0}),
        "c": _config(tiny, root / "c.yaml", "tiny-c", preprocessing={"img_size": C_SIZE}),
    }
    folders = {"a": a, "b": b, "c": c}
    alone = {k: evaluate_model(model=folders[k], config=cfg[k], data=val, **CPU) for k in "abc"}

    import evaluate.pixels.dataset
    import evaluate.pixels.preprocess

    decoded, resized = [], []
    to_rgb, release_call = evaluate.pixels.dataset.to_rgb, evaluate.pixels.preprocess.ReleaseTransform.__call__
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate.pixels.dataset, "to_rgb", lambda img: decoded.append(1) or to_rgb(img))
        mp.setattr(evaluate.pixels.preprocess.ReleaseTransform, "__call__",
                   lambda self, img: resized.append(self.pre.img_size) or release_call(self, img))
        many = evaluate_model(model=[(folders[k], cfg[k]) for k in "abc"], data=val, **CPU)
    return dict(val=val, folders=folders, cfg=cfg, alone=alone, many=many, decoded=decoded, resized=resized, root=root)


def test_each_model_gets_the_record_and_predictions_of_a_run_alone(job):
    many = job["many"]
    assert isinstance(many, ManyEvalResult) and len(many.runs) == 3
    for k, run in zip("abc", many.runs):
        alone = job["alone"][k]
        assert {key: v for key, v in run.record.items() if key not in TIMING} == \
               {key: v for key, v in alone.record.items() if key not in TIMING}
        assert run.predictions == alone.predictions
        assert run.top1 == alone.top1 and run.top5 == alone.top5
        assert many.for_model(job["folders"][k].name) is run and many.for_model(str(job["folders"][k])) is run
    # the fixture can tell the models apart: B disagrees with A on the images of the swapped colours only
    a, b, c = many.runs
    differ = sum(pa.top1("converted") != pb.top1("converted") for pa, pb in zip(a.predictions, b.predictions))
    assert 10 <= differ < 40 and a.top1 != b.top1
    assert 30 < a.top1 < 70 and a.top1 < a.top5
    assert c.record["img_size"] == C_SIZE and a.record["img_size"] == tiny_img_size()


def test_each_image_is_decoded_once_and_preprocessed_once_per_protocol(job):
    assert [run.num_samples for run in job["many"].runs] == [101] * 3
    assert len(job["decoded"]) == 101  # three models, one decode per image
    assert sorted(set(job["resized"])) == sorted([C_SIZE, tiny_img_size()])  # A and B share the tiny size; C has its own
    assert job["resized"].count(tiny_img_size()) == 101 and job["resized"].count(C_SIZE) == 101


def test_verdict_per_model_and_the_worst_for_the_job(job):
    many = job["many"]
    assert [r.verdict for r in many.runs] == ["pass", "fail", "not made"]
    assert many.verdict == "fail" and int(many.exit_status) == 1


def test_cli_models_file_reports_every_model_and_exits_with_the_worst(job, tmp_path):
    f, cfg = job["folders"], job["cfg"]
    models_file = tmp_path / "models.txt"
    models_file.write_text(f"# release check\n{f['a']} {cfg['a']}\n\n{f['b']} {cfg['b']}\n")
    out = tmp_path / "out"
    r = evaluate_cli("--models-file", models_file, "--model", f["c"], "--config", cfg["c"], "--data", job["val"],
                     "--output", out, *CLI_CPU)
    assert r.returncode == 1, r.stderr[-2000:]  # a, b, c: pass, fail, not made -> fail
    report = json.loads((out / "report.json").read_text())
    assert report["gate"] == "fail" and [run["gate"] for run in report["runs"]] == ["not made", "pass", "fail"]
    assert [run["model"] for run in report["runs"]] == [str(f["c"]), str(f["a"]), str(f["b"])]
    assert report["runs"][1]["top1"] == job["alone"]["a"].top1
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    a = f["a"].name  # the table name of a model: its folder's name
    assert list(rows[0]) == ["image_id", "label", "c_top1", f"{a}_top1", "b_top1"] and len(rows) == 101
    by_id = {p.image_id: p.top1("converted") for p in job["alone"]["b"].predictions}
    assert all(int(row["b_top1"]) == by_id[row["image_id"]] for row in rows)
    for name in ("| c | converted |", f"| {a} | converted |", "| b | converted |", "GATE: FAIL"):
        assert name in r.stdout
    assert f"## {a}:" in (out / "report.md").read_text()


def test_repeated_model_flag_evaluates_every_model(job, tmp_path):
    """Regression: argparse kept only the last --model, and the first was silently not evaluated."""
    f, cfg = job["folders"], job["cfg"]
    out = tmp_path / "out"
    r = evaluate_cli("--model", f["c"], "--model", f["b"], "--config", cfg["c"], "--data", job["val"], "--output", out,
                     *CLI_CPU)
    assert r.returncode == 3, r.stderr[-2000:]  # --config c for both: no recorded top-1, not made
    report = json.loads((out / "report.json").read_text())
    assert [run["model"] for run in report["runs"]] == [str(f["c"]), str(f["b"])]


@pytest.mark.parametrize("flags, field", [
    (["--reference", "x.pth"], "--reference"),
    (["--baseline", "prev"], "--baseline"),
    (["--update-card"], "--update-card"),
    (["--push-to-hub", "me/cvt"], "--push-to-hub"),
])
def test_one_model_options_are_refused_with_several_models(tmp_path, flags, field):
    r = evaluate_cli("--model", tmp_path / "absent-a", "--model", tmp_path / "absent-b", "--data", tmp_path,
                     "--output", tmp_path / "out", *flags, *CLI_CPU)
    assert r.returncode == 2 and r.stdout == ""
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {field}") and "several models" in line


def test_a_model_given_twice_or_a_bad_models_file_is_one_line(tmp_path):
    r = evaluate_cli("--model", "m", "--model", "m", "--data", tmp_path, *CLI_CPU)
    assert r.returncode == 2 and r.stderr.strip() == "error: --model m: is given twice; give each model once"
    bad = tmp_path / "models.txt"
    bad.write_text("a cfg extra\n")
    r = evaluate_cli("--models-file", bad, "--data", tmp_path, *CLI_CPU)
    assert r.returncode == 2 and r.stderr.strip() == (f"error: --models-file {bad}: line 1 has 3 words; give 'FOLDER' "
                                                      "or 'FOLDER CONFIG' per line")


def test_models_with_other_classes_are_refused_before_loading(job, tmp_path):
    ten = shutil.copytree(job["folders"]["a"], tmp_path / "ten")
    config = json.loads((ten / "config.json").read_text())
    config["id2label"] = {str(i): f"c{i}" for i in range(10)}
    config["label2id"] = {f"c{i}": i for i in range(10)}
    (ten / "config.json").write_text(json.dumps(config))
    (ten / "model.safetensors").write_bytes(b"not loaded")  # never read: the refusal comes first
    with pytest.raises(PlanError) as e:
        evaluate_model(model=[job["folders"]["a"], ten], config=job["cfg"]["c"], data=job["val"], **CPU)
    assert e.value.fields == ("models.model",) and f"different numbers of classes ({job['folders']['a'].name} 1000, ten 10)" in str(e.value)


def test_one_cache_serves_every_preprocessing_of_the_job(job, tmp_path):
    """``cache build`` with the job's models stores each distinct preprocessing once (224 for A, 192 for C); the job
    on the cache gives the JPEG job's predictions."""
    f, cfg = job["folders"], job["cfg"]
    models_file = tmp_path / "models.txt"
    models_file.write_text(f"{f['a']} {cfg['a']}\n{f['c']} {cfg['c']}\n")
    cache = tmp_path / "cache"
    r = evaluate_cli("cache", "build", "--models-file", models_file, "--data", job["val"], "--cache-dir", cache,
                     *CLI_CPU)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(release, release-2)" in r.stdout
    on_cache = evaluate_model(model=[(f["a"], cfg["a"]), (f["c"], cfg["c"])], data=job["val"], cache_dir=cache, **CPU)
    many = job["many"]
    assert on_cache.runs[0].predictions == many.runs[0].predictions
    assert on_cache.runs[1].predictions == many.runs[2].predictions
    assert [r.record["cache"] for r in on_cache.runs] == [str(cache)] * 2


def test_batch_size_auto_serves_the_job(job):
    f, cfg = job["folders"], job["cfg"]
    many = evaluate_model(model=[(f["a"], cfg["a"]), (f["b"], cfg["b"])], data=job["val"],
                          **{**CPU, "batch_size": "auto"})
    assert [run.predictions for run in many.runs] == [job["many"].runs[0].predictions, job["many"].runs[1].predictions]


def test_bf16_records_float32_heads_by_row_name_as_a_run_alone(job):
    """Issue 19.10: under bf16-mixed each model's record names its float32 head by its row (``converted``), as a run
    of it alone does, not by the job's internal candidate name (``b/converted``)."""
    f, cfg = job["folders"], job["cfg"]
    bf16 = dict(CPU, precision="bf16-mixed", subset=10)
    alone = evaluate_model(model=f["b"], config=cfg["b"], data=job["val"], **bf16)
    many = evaluate_model(model=[(f["a"], cfg["a"]), (f["b"], cfg["b"])], data=job["val"], **bf16)
    assert alone.record["numerics"]["float32_head"] == ["converted"]
    assert [run.record["numerics"] for run in many.runs] == [alone.record["numerics"]] * 2
