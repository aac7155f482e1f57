"""python -m evaluate on image folders the tests make (real JPEGs) with a converted tiny model that
classifies by colour and is right on about half of the images (see evalkit)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from cvt_port.labels import wnid_to_index
from evaluate.sources.real_labels import load_real_labels
from evalkit import evaluate_cli, evaluate_process, make_half_right_imagefolder, tiny_img_size, wnids

REQUIRED = ["model", "variant", "num_samples", "top1", "top5", "top1_ci95", "real_top1", "reference_top1", "agreement",
            "max_abs_logit_diff", "mcnemar_p", "gate", "checks", "img_size", "crop_pct", "interpolation",
            "preprocessing", "precision", "devices", "world_size", "images_per_second", "subset_sha256", "versions",
            "provenance", "hardware", "image_processor"]


@pytest.fixture(scope="module")
def val101(tmp_path_factory):
    """101 ILSVRC2012-named JPEGs in 10 wnid folders (a 10-class subset: indices stay ImageNet's), about
    half of them in their folder's colour; the colour classes ride along as ``val101.colour_class``."""
    root = tmp_path_factory.mktemp("data") / "val"
    colour_class = make_half_right_imagefolder(root)
    (root.parent / "colour_class.json").write_text(json.dumps(colour_class))
    return root


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def base_args(tiny, data, out, *more):
    return ["--model", tiny["hf"], "--config", tiny["yaml"], "--data", data, "--output", out,
            "--accelerator", "cpu", "--batch-size", "8", "--num-workers", "1", *more]


@pytest.fixture(scope="module")
def single(tiny, val101, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    r = evaluate_cli(*base_args(tiny, val101, out, "--reference", tiny["pth"], "--devices", "1"))
    assert r.returncode == 3, r.stderr[-3000:]  # 101 images cannot make a check (see the gate test)
    return out, r


def test_report_fields_and_figures(single, val101):
    out, r = single
    rep = json.loads((out / "report.json").read_text())
    assert set(REQUIRED) <= set(rep)
    assert rep["num_samples"] == 101 and rep["world_size"] == 1
    assert rep["agreement"] == 1.0 and rep["max_abs_logit_diff"] <= 1e-5 and rep["mcnemar_p"] == 1.0
    assert rep["img_size"] == tiny_img_size() and rep["crop_pct"] == 0.875 and rep["interpolation"] == "bicubic"
    # 101 images: the paired checks pass on these images but could not see a 1% change: not made
    checks = {c["name"]: c for c in rep["checks"]}
    assert {k: c["status"] for k, c in checks.items()} == {
        "reference_top1": "not made", "agreement": "not made", "recorded_top1": "not made"}
    assert "needs 459 images" in checks["agreement"]["detail"] and checks["agreement"]["resolution"]
    assert rep["gate"] == "not made" and "GATE: NOT MADE" in r.stdout
    preds = read_csv(out / "predictions.csv")
    assert len(preds) == 101 and list(preds[0])[:7] == ["image_id", "label", "pred1", "pred2", "pred3", "pred4", "pred5"]
    # the fixture works: predictions follow the images' colours, and about half are right
    colour_class = json.loads((val101.parent / "colour_class.json").read_text())
    assert sum(int(p["pred1"]) == colour_class[p["image_id"]] for p in preds) >= 95
    assert 30 < rep["top1"] < 70 and rep["top1"] < rep["top5"] < 100
    # the figures, recomputed independently from the per-image predictions
    assert rep["top1"] == pytest.approx(100 * sum(p["pred1"] == p["label"] for p in preds) / 101)
    assert rep["top5"] == pytest.approx(100 * sum(p["label"] in [p[f"pred{i}"] for i in range(1, 6)] for p in preds) / 101)
    assert rep["reference_top1"] == pytest.approx(100 * sum(p["reference_top1"] == p["label"] for p in preds) / 101)
    real = load_real_labels()
    judged = [(int(p["pred1"]) in real[int(p["image_id"][-13:-5]) - 1]) for p in preds if real[int(p["image_id"][-13:-5]) - 1]]
    assert 0 < len(judged) < 101 and rep["real_top1"] not in (0.0, 100.0, rep["top1"])
    assert rep["real_top1"] == pytest.approx(100 * sum(judged) / len(judged))
    ids = "".join(p["image_id"] + "\n" for p in preds)
    assert rep["subset_sha256"] == hashlib.sha256(ids.encode()).hexdigest()
    # class index = position among the 1000 sorted wnids, not among the 10 folders present
    assert {p["label"] for p in preds} == {str(i * 100) for i in range(10)}
    assert (out / "report.md").read_text().count("| converted |") == 1
    # per-class accuracy: the same predictions, class by class, and not all alike
    per_class = {int(row["class_index"]): float(row["converted_top1"]) for row in read_csv(out / "per_class.csv")}
    expected = {c: 100 * sum(p["pred1"] == p["label"] for p in preds if int(p["label"]) == c) /
                sum(int(p["label"]) == c for p in preds) for c in range(0, 1000, 100)}
    assert per_class == pytest.approx(expected, abs=1e-4) and len(set(per_class.values())) > 3


def test_two_ddp_processes_count_every_image_once(single, tiny, val101, tmp_path):
    """Two processes hold different halves of the images, with different accuracies: only synced
    metrics give the one-process figures (with torchmetrics' sync_on_compute=False this fails)."""
    out1, _ = single
    r = evaluate_process(*base_args(tiny, val101, tmp_path, "--reference", tiny["pth"], "--devices", "2", "--strategy", "ddp"))
    assert r.returncode == 3, r.stderr[-3000:]
    assert r.stdout.count("GATE: NOT MADE") == 1  # rank 0 reports
    one, two = (json.loads((o / "report.json").read_text()) for o in (out1, tmp_path))
    assert two["world_size"] == 2 and two["num_samples"] == 101
    for k in ("top1", "top5", "reference_top1", "agreement", "real_top1", "subset_sha256", "gate"):
        assert one[k] == two[k], k
    assert read_csv(out1 / "predictions.csv") == read_csv(tmp_path / "predictions.csv")
    assert read_csv(out1 / "per_class.csv") == read_csv(tmp_path / "per_class.csv")
    # the shards differ: rank 0 alone (images 0, 2, 4, ...) would not give the figure of all images
    preds = read_csv(tmp_path / "predictions.csv")
    ranks = [[p for i, p in enumerate(preds) if i % 2 == r] for r in (0, 1)]
    assert len({round(100 * sum(p["pred1"] == p["label"] for p in part) / len(part), 6) for part in ranks}) == 2


def test_gate_fails_when_one_weight_of_the_converted_model_is_perturbed(tiny, val101, tmp_path):
    bad = tmp_path / "perturbed"
    shutil.copytree(tiny["hf"], bad)
    sd = load_file(bad / "model.safetensors")
    sd["classifier.bias"][0] += 100.0  # one weight: class 0 now wins everywhere
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    r = evaluate_cli("--model", bad, "--config", tiny["yaml"], "--data", val101, "--output", tmp_path / "out",
                     "--reference", tiny["pth"], "--accelerator", "cpu", "--num-workers", "0")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "GATE: FAIL" in r.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["gate"] == "fail" and rep["agreement"] < 0.999 and rep["max_abs_logit_diff"] > 50
    assert {c["name"]: c["status"] for c in rep["checks"]}["agreement"] == "fail"
    preds = read_csv(tmp_path / "out" / "predictions.csv")
    assert {p["pred1"] for p in preds} == {"0"}  # class 0 everywhere ...
    agree = sum(p["pred1"] == p["reference_top1"] for p in preds)
    assert 0 < agree < 30 and rep["agreement"] == agree / 101  # ... so it agrees where the original said 0
    assert len(rep["top1_differs"]) == 101 - agree


def test_stock_class_and_both_preprocessings_side_by_side(tiny, val101, tmp_path):
    r = evaluate_cli(*base_args(tiny, val101, tmp_path, "--stock", "--preprocessing", "both", "--reference", tiny["pth"]))
    # exact GELU moves the logits but changes no top-1 of these 101 images: nothing fails, and 101 images
    # cannot make a paired check
    assert r.returncode == 3 and "GATE: NOT MADE" in r.stdout, r.stderr[-3000:]
    rep = json.loads((tmp_path / "report.json").read_text())
    rows = {m["name"]: m for m in rep["models"]}
    assert set(rows) == {"stock", "stock (hf)", "original"}
    assert rows["stock"]["preprocessing"] == "release" and rows["stock (hf)"]["preprocessing"] == "hf"
    assert rows["stock"]["max_abs_logit_diff"] > 1e-4  # exact GELU is not the original's QuickGELU
    assert rows["stock"]["agreement_with_original"] == 1.0 and rep["gate"] == "not made"
    preds = read_csv(tmp_path / "predictions.csv")
    assert "stock (hf)_top1" in preds[0]


def test_subset_is_deterministic_and_recorded(tiny, val101, tmp_path):
    reps = []
    for name in ("a", "b"):
        r = evaluate_cli(*base_args(tiny, val101, tmp_path / name, "--subset", "20", "--seed", "3"))
        assert r.returncode == 3 and "GATE: NOT MADE" in r.stdout, r.stderr[-3000:]
        reps.append(json.loads((tmp_path / name / "report.json").read_text()))
    assert reps[0]["num_samples"] == 20 and reps[0]["subset"] == 20 and reps[0]["seed"] == 3
    assert reps[0]["subset_sha256"] == reps[1]["subset_sha256"]
    labels = [p["label"] for p in read_csv(tmp_path / "a" / "predictions.csv")]
    assert sorted(labels.count(l) for l in set(labels)) == [2] * 10  # class-balanced


def vit_folder(tiny, folder: Path, image_size: int) -> Path:
    """A tiny ViT with the tiny CvT's labels and image processor: it takes ``image_size`` images only."""
    from transformers import ViTConfig, ViTForImageClassification

    cfg = json.loads((tiny["hf"] / "config.json").read_text())
    vit = ViTForImageClassification(ViTConfig(image_size=image_size, patch_size=16, hidden_size=32, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=64, num_labels=1000,
                                              id2label=cfg["id2label"], label2id=cfg["label2id"]))
    vit.save_pretrained(folder)
    shutil.copy(tiny["hf"] / "preprocessor_config.json", folder)
    return folder


def test_any_hf_image_classification_folder(tiny, val101, tmp_path):
    args = base_args(tiny, val101, tmp_path / "out", "--preprocessing", "hf")
    args[args.index("--model") + 1] = vit_folder(tiny, tmp_path / "vit", tiny_img_size())  # instead of the tiny CvT
    r = evaluate_cli(*args)
    assert r.returncode == 3, r.stderr[-3000:]  # evaluated, but no check can be made without --reference
    assert "GATE: NOT MADE" in r.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["models"][0]["kind"] == "auto" and rep["num_samples"] == 101 and rep["gate"] == "not made"


def test_a_model_that_refuses_the_input_size_is_one_line_exit_2_before_the_pass(tiny, val101, tmp_path, monkeypatch):
    import evaluate.validation.trainer

    monkeypatch.setattr(evaluate.validation.trainer, "run_validation", lambda *a, **k: pytest.fail("the pass started"))
    other = 2 * tiny_img_size()  # a ViT trained at another size than the config's preprocessing gives
    args = base_args(tiny, val101, tmp_path / "out")
    args[args.index("--model") + 1] = vit_folder(tiny, tmp_path / "vit", other)
    r = evaluate_cli(*args)
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    assert f"vit: the model does not take the {tiny_img_size()}x{tiny_img_size()} images of the 'release' " \
           f"preprocessing" in line and f"its config.json says image_size {other}" in line, line
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_subset_file_and_flat_layout_through_the_cli(tiny, tmp_path):
    from imagegen import make_flat

    flat = tmp_path / "flat"
    make_flat(flat, range(1, 13))
    wn = wnids(3, step=5)
    (flat / "val_labels.txt").write_text("".join(wn[i % 3] + "\n" for i in range(12)))
    pinned = ["ILSVRC2012_val_00000007.JPEG", "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000011.JPEG"]
    (tmp_path / "subset.txt").write_text("\n".join(pinned) + "\n")
    r = evaluate_cli("--model", tiny["hf"], "--config", tiny["yaml"], "--data", flat, "--output", tmp_path / "out",
                     "--subset-file", tmp_path / "subset.txt", "--accelerator", "cpu", "--num-workers", "0")
    assert r.returncode == 3 and "GATE: NOT MADE" in r.stdout, r.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["layout"] == "flat" and rep["num_samples"] == 3 and rep["subset"] == 3
    assert rep["subset_sha256"] == hashlib.sha256("".join(p + "\n" for p in pinned).encode()).hexdigest()
    preds = read_csv(tmp_path / "out" / "predictions.csv")
    # labels from the file by the number in the name: image n has wnid wn[(n - 1) % 3]
    assert {p["image_id"]: p["label"] for p in preds} == {
        p: str(wnid_to_index()[wn[(int(p[15:23]) - 1) % 3]]) for p in pinned}
    assert rep["real_top1"] is not None  # ILSVRC2012 validation file names: ReaL labels apply
