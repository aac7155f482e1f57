"""Converting a release-format checkpoint: the folder, its facts, and the two ways to load it."""

import json

import pytest
import torch
from transformers import AutoImageProcessor, CvtForImageClassification

import cvt_port
from cvt_port.cli import main
from cvt_port.hf import gelu_module_names
from cvt_port.labels import imagenet_class_names
from evalkit import cvt_port_cli


@pytest.fixture(scope="module")
def converted(cvt13_checkpoint, tmp_path_factory):
    path, reference = cvt13_checkpoint
    out = tmp_path_factory.mktemp("conv") / "cvt-13"
    assert cvt_port.convert(path, out) == out
    return out, reference


def test_folder_holds_everything(converted):
    out, _ = converted
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "conversion.json", "image_processing_cvt_port.py", "model.safetensors",
        "modeling_cvt_port.py", "preprocessor_config.json"
    ]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_weights_and_config_are_what_save_pretrained_writes(converted, tmp_path):
    """convert() writes model.safetensors itself (while transformers imports) and config.json from
    the config: both byte for byte what CvtForImageClassification.save_pretrained writes."""
    out, _ = converted
    from transformers import CvtForImageClassification

    CvtForImageClassification.from_pretrained(out).save_pretrained(tmp_path)
    for name in ("model.safetensors", "config.json"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_folder_permissions_follow_the_umask(converted):
    out, _ = converted
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        p.name: 0o666 & ~umask for p in out.iterdir()}  # not safetensors' 0600


def test_config_records_activation_and_imagenet_labels(converted):
    out, _ = converted
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_act"] == "quick_gelu"
    names = imagenet_class_names()
    assert cfg["id2label"]["0"] == "tench, Tinca tinca" == names[0]
    assert len(cfg["id2label"]) == 1000 and cfg["label2id"][names[999]] == 999


def test_load_model_reproduces_the_original(converted):
    out, reference = converted
    model = cvt_port.load_model(out)
    assert not model.training and gelu_module_names(model) == {"QuickGELUActivation"}
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        diff = (model(x).logits - reference(x)).abs().max().item()
    assert diff <= 1e-5


def test_stock_class_loads_cleanly_and_drifts_as_recorded(converted):
    out, reference = converted
    stock, info = CvtForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert gelu_module_names(stock) == {"GELUActivation"} or gelu_module_names(stock) == {"GELU"}
    facts = json.loads((out / "conversion.json").read_text())
    from cvt_port.conversion import probe_batch
    from cvt_port.variants import get_variant

    x = probe_batch(get_variant("cvt-13-224"))
    with torch.no_grad():
        drift = (stock.eval()(x).logits - reference(x)).abs().max().item()
    assert drift == pytest.approx(facts["parity"]["stock_gelu_max_abs_logit_diff"], rel=1e-4)
    assert drift > 1e-3  # the stock class does not compute what the original computed


def test_conversion_facts_and_model_card(converted, cvt13_checkpoint):
    out, _ = converted
    path, _ = cvt13_checkpoint
    facts = json.loads((out / "conversion.json").read_text())
    from cvt_port.provenance import sha256_of as sha256_file

    assert facts["source"] == {"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}
    assert facts["variant"] == "cvt-13-224" and facts["activation"] == "quick_gelu"
    assert facts["parity"]["max_abs_logit_diff"] <= facts["parity"]["tolerance"] == 1e-5
    card = (out / "README.md").read_text()
    assert facts["source"]["sha256"] in card and "quick_gelu" in card and "cvt_port.load_model" in card
    assert f"{facts['parity']['stock_gelu_max_abs_logit_diff']:.3g}" in card


def test_model_card_header_is_what_the_hub_reads(converted):
    """The card is written with huggingface_hub's ModelCard API: its YAML header parses back into the
    fields the Hub shows (license, base model, datasets, tags), and it claims no evaluation results."""
    from huggingface_hub import ModelCard

    out, _ = converted
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert data["base_model"] == "microsoft/cvt-13"  # configs/cvt-13-224.yaml's hub_id
    assert data["datasets"] == ["imagenet-1k"]
    assert set(data["tags"]) == {"image-classification", "cvt", "cvt-port"}
    assert card.data.eval_results is None  # accuracy is added by an evaluation that passed its gate
    facts = json.loads((out / "conversion.json").read_text())
    p = facts["parity"]
    assert "## Parity certificate" in card.text
    for figure in (f"{p['max_abs_logit_diff']:.3g} (tolerance {p['tolerance']:g})", facts["source"]["sha256"],
                   f"{p['stock_gelu_max_abs_logit_diff']:.3g}", facts["versions"]["transformers"]):
        assert figure in card.text


@pytest.mark.parametrize("name, base_model, datasets", [
    ("cvt-13-384-22k", "microsoft/cvt-13-384-22k", ["imagenet-21k", "imagenet-1k"]),
    ("cvt-w24-384-22k", "microsoft/cvt-w24-384-22k", ["imagenet-21k", "imagenet-1k"]),
    ("cvt-21-384", "microsoft/cvt-21-384", ["imagenet-1k"]),
    ("cvt-tiny-digits", None, None),  # no Hub counterpart, not ImageNet
])
def test_model_card_base_model_and_datasets_come_from_the_variant_config(name, base_model, datasets):
    from huggingface_hub import ModelCard

    from cvt_port.card import card_data
    from cvt_port.variants import get_variant

    data = ModelCard(f"---\n{card_data({}, get_variant(name)).to_yaml()}\n---\nbody").data
    assert data.base_model == base_model and data.datasets == datasets and data.license == "mit"


def test_preprocessor_reproduces_release_protocol(converted):
    out, _ = converted
    proc = AutoImageProcessor.from_pretrained(out)
    assert proc.size == {"shortest_edge": 224} and proc.crop_pct == 0.875 and int(proc.resample) == 3
    assert list(proc.image_mean) == [0.485, 0.456, 0.406] and list(proc.image_std) == [0.229, 0.224, 0.225]


def test_existing_output_is_refused_then_replaced_with_overwrite(cvt13_checkpoint, tmp_path, capsys):
    path, _ = cvt13_checkpoint
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and str(out) in err and len(err.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["convert", str(path), str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_empty_existing_output_folder_is_fine(cvt13_checkpoint, tmp_path):
    path, _ = cvt13_checkpoint
    (tmp_path / "out").mkdir()
    assert main(["convert", str(path), str(tmp_path / "out")]) == 0


def test_wrapped_and_prefixed_checkpoints(cvt13_checkpoint, tmp_path):
    path, reference = cvt13_checkpoint
    sd = torch.load(path, weights_only=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = reference(x)
    for i, obj in enumerate([
        {"state_dict": sd, "epoch": 300},
        {"model": {f"module.{k}": v for k, v in sd.items()}},
        {f"module.{k}": v for k, v in sd.items()},
    ]):
        ckpt = tmp_path / f"wrapped{i}.pth"
        torch.save(obj, ckpt)
        out = cvt_port.convert(ckpt, tmp_path / f"out{i}", variant="cvt-13-224")
        with torch.no_grad():
            assert (cvt_port.load_model(out)(x).logits - want).abs().max() <= 1e-5


def test_help_texts_describe_the_arguments():
    r = cvt_port_cli("convert", "--help")
    assert r.returncode == 0
    assert "original .pth" in r.stdout and "OUTPUT_DIR" in r.stdout and "--push-to-hub" in r.stdout
    assert "Input Image Size" not in r.stdout and "C:\\" not in r.stdout
