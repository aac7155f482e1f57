"""The proof: every released variant at full size, converted through the CLI, computes what the original computed.

A randomly initialised reference model (non-trivial BatchNorm statistics) is saved in the release
format under the release file name, converted with `python -m cvt_port convert`, and the folder's
`load_model` output is compared with the reference on the same input.
"""

import json
import zlib

import pytest
import torch
from transformers import CvtForImageClassification

import cvt_port
from cvt_port.variants import release_variants

from conftest import save_release_checkpoint
from evalkit import cvt_port_cli


@pytest.mark.parametrize("name", sorted(release_variants()))
def test_full_size_variant_converts_exactly(name, tmp_path):
    variant = release_variants()[name]
    ckpt = tmp_path / variant.release_file
    reference = save_release_checkpoint(name, ckpt, seed=zlib.crc32(name.encode()) % 1000)  # reproducible
    out = tmp_path / "hf"
    r = cvt_port_cli("convert", ckpt, out)
    assert r.returncode == 0, r.stderr
    assert "[5/5]" in r.stderr  # progress was shown
    facts = json.loads((out / "conversion.json").read_text())
    assert facts["variant"] == name  # inferred from the weights and the release file name

    s = variant.preprocessing.img_size
    x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        want = reference(x)
        del reference
        exact = cvt_port.load_model(out)(x).logits
        stock = CvtForImageClassification.from_pretrained(out).eval()(x).logits
    diff, drift = (exact - want).abs().max().item(), (stock - want).abs().max().item()
    print(f"\nPROOF {name}: load_model max|diff| {diff:.3g}, stock class {drift:.3g}, "
          f"conversion {facts['wall_time_s']:.1f} s, peak RSS {facts['peak_rss_mib']:.0f} MiB, "
          f"file {facts['source']['size_bytes'] / 2**20:.0f} MiB")
    assert diff <= 1e-5
    assert drift > diff  # the stock class drifts; the exact activation does not
