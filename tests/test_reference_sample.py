"""Issue 26.3: the original (--reference) only on the seeded sample the paired checks need, when the converted
weights are provably the original's (conversion.json's parity record, the .pth's and the weights' sha256); the
converted model still on every image; the gate says which checks ran on which images; anything unproved is
refused in one line (exit status 2)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from evalkit import evaluate_cli, make_half_right_imagefolder, swap_head_classes

from cvt_port.errors import BadInput
from cvt_port.variants import TESTING_CONFIGS_DIR
from evaluate.api import evaluate_model
from evaluate.verdict.gate_settings import gate_settings
from evaluate.verdict.stats import images_to_detect_disagreement
from cvt_port.variants import load_variant_file
from benchmarks.synthetic.checkpoints import save_release_checkpoint

DROP = 5.0  # a gate that sees a change on 5 % of the images: a sample of tens of images, not 459


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("refsample")
    data = root / "val"
    make_half_right_imagefolder(data)  # 101 images, 10 classes, half of them right
    config = root / "tiny-sample-gate.yaml"
    text = (TESTING_CONFIGS_DIR / "tiny-imagenet.yaml").read_text()
    config.write_text(text.replace("gate: {top1_tolerance: 0.1, min_agreement: 0.999}",
                                   f"gate: {{top1_tolerance: 0.1, min_agreement: 0.999, detectable_drop: {DROP}}}"))
    assert f"detectable_drop: {DROP}" in config.read_text()
    g = gate_settings(load_variant_file(config))
    k = images_to_detect_disagreement(g.detectable_drop, g.power)
    full = run(tiny, data, config, root / "full")
    from evaluate.validation.lightning_module import EvalModule

    forward, sizes = EvalModule.forward_candidate, []
    EvalModule.forward_candidate = lambda self, c, x: (sizes.append((c.kind, x.shape[0])), forward(self, c, x))[1]
    try:
        sampled = run(tiny, data, config, root / "sampled", reference_sample=True)
    finally:
        EvalModule.forward_candidate = forward
    return {"root": root, "data": data, "config": config, "k": k, "full": full, "sampled": sampled, "sizes": sizes}


def run(tiny, data, config, out, model=None, reference=None, **more):
    return evaluate_model(model=str(model or tiny["hf"]), config=str(config), data=str(data),
                          reference=str(reference or tiny["pth"]), accelerator="cpu", devices=1, num_workers=0,
                          batch_size=16, summary=False, output=str(out), **more)


def predictions(out: Path) -> dict:
    with open(out / "predictions.csv", newline="") as fh:
        return {r["image_id"]: r for r in csv.DictReader(fh)}


def test_the_original_runs_on_the_sample_the_gate_needs_and_the_converted_model_on_every_image(setup):
    full, sampled, k = setup["full"], setup["sampled"], setup["k"]
    rec = sampled.record
    assert 0 < k < full.record["num_samples"] == rec["num_samples"] == 101
    s = rec["reference_sample"]
    assert (s["images"], s["of"], s["seed"]) == (k, 101, 0)
    assert s["proof"]["parity_max_abs_logit_diff"] <= s["proof"]["parity_tolerance"]
    models = {m["name"]: m for m in rec["models"]}
    assert rec["top1"] == full.record["top1"] and 0 < rec["top1"] < 100  # the converted model: every image
    # the original's column only on the sample, and there equal to the full run's
    got, every = predictions(setup["root"] / "sampled"), predictions(setup["root"] / "full")
    on = [i for i, r in got.items() if r["reference_top1"] != ""]
    assert len(on) == k and len(got) == 101
    assert all(got[i]["reference_top1"] == every[i]["reference_top1"] for i in on)
    assert all(got[i]["pred1"] == every[i]["pred1"] for i in got)
    assert len({got[i]["reference_top1"] for i in on}) > 1
    right = sum(every[i]["reference_top1"] == every[i]["label"] for i in on)
    assert rec["reference_top1"] == pytest.approx(100 * right / k)
    assert models[sampled.reference]["top1"] == rec["reference_top1"]
    agree = sum(got[i]["pred1"] == got[i]["reference_top1"] for i in on)
    assert rec["agreement"] == pytest.approx(agree / k)
    # the original ran in full batches of sampled images (16), the last one short; the converted model on all 101
    ref = [n for kind, n in setup["sizes"] if kind == "reference"]
    assert sum(ref) == k and ref == [16] * (k // 16) + ([k % 16] if k % 16 else [])
    assert sum(n for kind, n in setup["sizes"] if kind != "reference") == 101
    # the same seeded images each time; another seed, other images
    again = run_sample_ids(setup, "again", seed=0)
    other = run_sample_ids(setup, "other", seed=1)
    assert again == set(on) and other != set(on) and len(other) == k


def run_sample_ids(setup, name, seed):
    from evaluate.sources.layouts import discover
    from evaluate.verdict.reference_sample import choose
    from cvt_port.variants import load_variant_file

    samples = list(discover(setup["data"]).samples)
    chosen = choose(samples, load_variant_file(setup["config"]), seed, {})
    return {samples[i].image_id for i in chosen.positions}


def test_the_gate_says_which_checks_ran_on_which_images(setup, tiny):
    rec, k = setup["sampled"].record, setup["k"]
    checks = {c["name"]: c for c in rec["checks"]}
    for name in ("reference_top1", "agreement"):
        assert checks[name]["detail"].startswith(f"on the original's seeded sample of {k} of 101 images: ")
        assert checks[name]["status"] == "pass"  # the conversion is exact, and the sample is large enough
    assert "101" in checks["recorded_top1"]["detail"] or checks["recorded_top1"]["status"] == "not made"
    full_checks = {c["name"]: c for c in setup["full"].record["checks"]}
    assert "sample" not in full_checks["agreement"]["detail"]
    ran = evaluate_cli("--model", tiny["hf"], "--config", setup["config"], "--data", setup["data"], "--reference",
                       tiny["pth"], "--reference-sample", "--accelerator", "cpu", "--devices", "1",
                       "--num-workers", "0", "--output", setup["root"] / "cli")
    gate = [ln for ln in ran.stdout.splitlines() if ln.startswith("GATE:")]
    assert gate and f"the original on a seeded sample of {k} of 101 images: reference_top1, agreement on the " \
                   "sample, recorded_top1 on all 101" in gate[0]
    assert json.loads((setup["root"] / "cli" / "report.json").read_text())["reference_sample"]["images"] == k


@pytest.mark.parametrize("case", ["other original", "weights changed", "no weights record", "no conversion.json",
                                  "no reference"])
def test_weights_not_proved_to_be_the_originals_are_refused_in_one_line(setup, tiny, tmp_path, case):
    model, reference, extra = tiny["hf"], tiny["pth"], ["--reference", tiny["pth"]]
    if case == "other original":
        reference = save_release_checkpoint(load_variant_file(setup["config"]), tmp_path / "other.pth", seed=7)
        reference = tmp_path / "other.pth"
        extra = ["--reference", reference]
    elif case == "weights changed":
        model = swap_head_classes(tiny["hf"], tmp_path / "swapped", 0, 100)
    elif case in ("no weights record", "no conversion.json"):
        model = tmp_path / "copy"
        shutil.copytree(tiny["hf"], model)
        if case == "no conversion.json":
            (model / "conversion.json").unlink()
        else:
            facts = json.loads((model / "conversion.json").read_text())
            del facts["weights"]
            (model / "conversion.json").write_text(json.dumps(facts))
    else:
        extra = []
    ran = evaluate_cli("--model", model, "--config", setup["config"], "--data", setup["data"], *extra,
                       "--reference-sample", "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
                       "--output", tmp_path / "out")
    lines = ran.stderr.strip().splitlines()
    assert ran.returncode == 2 and len(lines) == 1 and "--reference-sample" in lines[0], ran.stderr
    assert "Traceback" not in ran.stderr and not (tmp_path / "out" / "report.json").exists()
    with pytest.raises(BadInput, match="reference_sample"):
        run(tiny, setup["data"], setup["config"], tmp_path / "api", model=model,
            reference=reference if extra else None, reference_sample=True) if extra else evaluate_model(
            model=str(model), config=str(setup["config"]), data=str(setup["data"]), reference_sample=True)
