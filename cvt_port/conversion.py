"""Original checkpoint -> Hugging Face folder, verified logit for logit before it is put in place.

Data flows one way: read (mmap, no code run) -> infer/check the variant -> map keys once with
the table in :mod:`cvt_port.keymap` -> load both the reference model and the converted model
with ``strict=True`` (sharing the very same tensors, so no weight is copied) -> compare logits
on a fixed probe batch -> the finished temporary folder beside the target is renamed into place.

Where the time goes (CvT-W24, 1.1 GB, 2 cores): importing transformers costs about 2.3 s, more
than reading, hashing and writing the weights together. So the two jobs that need neither
transformers nor much Python run in worker threads while the main thread imports it: the source's
sha256 and writing ``model.safetensors`` (the mapped tensors, exactly as ``save_pretrained``
writes them; tests compare the bytes). Both spend their time in C code that releases the GIL.
The probe forwards stay on the main thread after the import: run beside the import, the many
small Python-dispatched ops and the import fight over the GIL, and both got slower (measured
+0.6 s on W24). The weights are written before the check passes, but into the temporary folder,
which is deleted unless the check passes.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch

from .atomic import publish_dir
from .card import write_model_card
from .checkpoint import infer_shape, load_state_dict
from .errors import BadInput, ParityError
from .keymap import convert_keys
from .legacy import LegacyHints, pick_variant
from .outputs import WRITE_ERRNOS, cannot_write, check_output_folder
from .provenance import library_versions, sha256_of
from .reference import OriginalCvT
from .variants import Variant, all_variants, get_variant

PARITY_TOLERANCE = 1e-5  # max |logit difference|, float32 on CPU
PROBE_SEED = 0
PROBE_BATCH = 2
# CvT has no position embeddings, so every weight takes part at any input size; a 64x64 probe checks
# the whole mapping at a fraction of the cost of the evaluation size (a W24 forward at 384 costs
# 193 GFLOPs and ~1 GB of attention scores). tests/test_proof_all_variants.py compares at full size.
PROBE_SIZE = 64


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far. /proc's VmHWM belongs to this address space;
    getrusage's ru_maxrss survives exec, so a child of a big process would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Before the checkpoint is read: the target is a folder or nothing, is empty unless ``overwrite``,
    and its place on disk is writable (the finished folder is made beside it and renamed into place)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise BadInput(f"{output_dir}: exists and is not a folder; choose another output path")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise BadInput(f"{output_dir}: output folder exists and is not empty; pass --overwrite to replace it")
    check_output_folder(output_dir)


def check_keys(path: Path, sd: dict[str, torch.Tensor], reference: torch.nn.Module) -> None:
    """Every key of the variant present with its shape, and nothing else: else name the first culprit."""
    expected = reference.state_dict()
    missing = [k for k in expected if k not in sd]
    if missing:
        raise BadInput(f"{path}: missing key '{missing[0]}'" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                       + "; the checkpoint is incomplete or of another architecture")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise BadInput(f"{path}: unexpected key '{extra[0]}'" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                       + "; not part of the original CvT (check --variant)")
    for k, t in expected.items():
        if tuple(sd[k].shape) != tuple(t.shape):
            raise BadInput(f"{path}: key '{k}' has shape {list(sd[k].shape)}, expected {list(t.shape)} for this variant")


def probe_batch(variant: Variant) -> torch.Tensor:
    """A fixed, seeded batch of normalised-image-like inputs (PROBE_BATCH x PROBE_SIZE^2)."""
    g = torch.Generator().manual_seed(PROBE_SEED)
    s = PROBE_SIZE
    return torch.randn(PROBE_BATCH, variant.architecture.in_chans, s, s, generator=g)


def read_original(checkpoint: Path, requested: Variant | None,
                  hints: LegacyHints = LegacyHints()) -> tuple[dict[str, torch.Tensor], Variant]:
    """The checkpoint's tensors (float32) and its variant, every key and shape checked (else BadInput);
    the legacy script's ``--cvt_model``/``--image_size`` (``hints``) must agree with it."""
    sd = load_state_dict(checkpoint)
    chosen = pick_variant(checkpoint, infer_shape(checkpoint, sd), all_variants(), requested, hints)
    with torch.device("meta"):
        check_keys(checkpoint, sd, OriginalCvT(chosen.architecture))
    sd = {k: (t.float() if t.is_floating_point() and t.dtype != torch.float32 else t) for k, t in sd.items()}
    return sd, chosen


def reference_model(sd: dict[str, torch.Tensor], variant: Variant) -> OriginalCvT:
    """Our implementation of the original, holding the very tensors of ``sd`` (strict, no copies)."""
    with torch.device("meta"):
        reference = OriginalCvT(variant.architecture)
    reference.load_state_dict(sd, strict=True, assign=True)
    return reference.eval()


def mapped_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors under their Hugging Face names (the key table, applied once)."""
    names, unmapped = convert_keys(sd)
    assert not unmapped, unmapped  # check_keys() has already vetted every key
    return {names[k]: t for k, t in sd.items()}


def converted_model(mapped: dict[str, torch.Tensor], variant: Variant):
    """The Hugging Face model holding the very tensors of ``mapped`` (strict, no copies).
    Imports transformers (seconds): callers that can overlap other work with that do so first."""
    from .hf import build_hf_model, hf_config

    hf = build_hf_model(hf_config(variant), device="meta")
    hf.load_state_dict(mapped, strict=True, assign=True)
    return hf.eval()


def build_pair(sd: dict[str, torch.Tensor], variant: Variant):
    """(reference model, converted HF model), both loaded strictly from the same tensors (no copies)."""
    return reference_model(sd, variant), converted_model(mapped_state_dict(sd), variant)


def write_weights(mapped: dict[str, torch.Tensor], folder: Path) -> Path:
    """``model.safetensors`` exactly as ``save_pretrained`` writes it for CvT (same tensors, names
    and metadata; tests compare the bytes), without waiting for transformers to import."""
    from safetensors.torch import save_file

    path = folder / "model.safetensors"
    save_file({k: t.contiguous() for k, t in mapped.items()}, str(path), metadata={"format": "pt"})
    return path


@torch.no_grad()
def measure_parity(reference, hf, x: torch.Tensor) -> dict:
    """Compare the original's logits on probe ``x`` with the converted model's, and with the stock
    class's exact GELU (what ``CvtForImageClassification`` computes out of the box)."""
    from .hf import set_activation

    ref = reference(x)
    exact = hf(pixel_values=x).logits
    set_activation(hf, "gelu")
    try:
        stock = hf(pixel_values=x).logits
    finally:
        set_activation(hf, hf.config.hidden_act)
    return {
        "probe": {"shape": list(x.shape), "seed": PROBE_SEED, "dtype": "float32", "device": "cpu"},
        "tolerance": PARITY_TOLERANCE,
        "max_abs_logit_diff": float((ref - exact).abs().max()),
        "stock_gelu_max_abs_logit_diff": float((ref - stock).abs().max()),
        "stock_gelu_top1_agreement": float((ref.argmax(-1) == stock.argmax(-1)).float().mean()),
        "max_abs_logit": float(ref.abs().max()),
    }


def write_remote_code(folder: Path) -> None:
    """Copy the package's remote-code files (:mod:`cvt_port.remote`) into ``folder`` and name them in
    ``preprocessor_config.json``'s ``auto_map`` (config.json's comes from :func:`cvt_port.hf.hf_config`).
    The stock keys stay as they are, so loading without ``trust_remote_code`` keeps the stock classes."""
    from . import remote

    for name in remote.REMOTE_FILES:
        shutil.copyfile(remote.HERE / name, folder / name)
    path = folder / "preprocessor_config.json"
    settings = json.loads(path.read_text())
    settings["auto_map"] = dict(remote.PROCESSOR_AUTO_MAP)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    variant: str | Path | Variant | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = _stderr,
    cvt_model: str | None = None,
    image_size: int | None = None,
) -> Path:
    """Convert an original CvT checkpoint into a Hugging Face folder and return the folder's path.

    ``cvt_model`` and ``image_size`` are the legacy Hugging Face script's ``--cvt_model`` (``cvt-13``,
    ``cvt-21``, ``cvt-w24``, or a full variant name) and ``--image_size``: checks on the variant that
    the weights and file name imply (:mod:`cvt_port.legacy`), or a choice where they cannot tell.

    Raises :class:`BadInput` (nothing read or written is kept) or :class:`ParityError`
    (the converted model does not compute what the original computed; nothing saved).
    """
    t0 = time.perf_counter()
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    requested = get_variant(variant) if isinstance(variant, (str, Path)) else variant
    hints = LegacyHints(cvt_model, image_size)
    if hints:
        hints.check_known(all_variants(), requested)
    check_output_dir(output_dir, overwrite)
    size = checkpoint.stat().st_size if checkpoint.is_file() else 0

    log(f"[1/5] reading {checkpoint} ({size / 2**20:.1f} MiB, memory-mapped, weights only)")
    sd, chosen = read_original(checkpoint, requested, hints)
    a = chosen.architecture
    log(f"      variant {chosen.name}: depth {list(a.depth)}, widths {list(a.embed_dim)}, "
        f"{a.num_classes} classes, {len(sd)} tensors")

    log(f"[2/5] mapping {len(sd)} keys; loading the reference model (strict)")
    reference = reference_model(sd, chosen)
    mapped = mapped_state_dict(sd)
    x = probe_batch(chosen)

    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    except OSError as exc:  # the place became unwritable since check_output_dir (or a race): one line
        raise cannot_write(output_dir, exc) from None
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="cvt_port") as pool:
            sha = pool.submit(sha256_of, checkpoint)
            # written, then hashed (conversion.json's ``weights``: what evaluate's --reference-sample checks)
            weights = pool.submit(lambda: sha256_of(write_weights(mapped, tmp)))
            log("[3/5] importing transformers (meanwhile: hashing the source and writing model.safetensors)")
            hf_side = importlib.import_module(".hf", __package__)
            hf = converted_model(mapped, chosen)
            log(f"      converted model loaded (strict); checking parity on a probe batch of {PROBE_BATCH} "
                f"inputs at {PROBE_SIZE}x{PROBE_SIZE}")
            parity = measure_parity(reference, hf, x)
            log(f"      max |logit diff| {parity['max_abs_logit_diff']:.3g} (tolerance {PARITY_TOLERANCE:g}); "
                f"stock GELU class drifts {parity['stock_gelu_max_abs_logit_diff']:.3g}")
            if not parity["max_abs_logit_diff"] <= PARITY_TOLERANCE:
                raise ParityError(
                    f"{checkpoint}: converted model differs from the original by {parity['max_abs_logit_diff']:.3g} "
                    f"(> {PARITY_TOLERANCE:g}) on the probe batch; nothing was saved"
                )
            log("[4/5] waiting for model.safetensors and the source sha256")
            written = weights.result()
            digest = sha.result()
        facts = {
            "cvt_port_version": _package_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {"file": checkpoint.name, "sha256": digest, "size_bytes": size},
            "variant": chosen.name,
            "variant_config": chosen.path.name if chosen.path else None,
            "hub_id": chosen.hub_id,
            "activation": chosen.architecture.activation,
            "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(chosen.architecture).items()},
            "preprocessing": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(chosen.preprocessing).items()},
            "parity": parity,
            "weights": {"file": "model.safetensors", "sha256": written},
            "versions": library_versions("torch", "transformers"),
        }

        log(f"[5/5] writing {output_dir}")
        hf.config.dtype = hf.dtype  # as save_pretrained records it: the config.json it writes (tests compare)
        hf.config.save_pretrained(tmp)
        hf_side.make_image_processor(chosen).save_pretrained(tmp)
        write_remote_code(tmp)
        facts["wall_time_s"] = round(time.perf_counter() - t0, 3)
        facts["peak_rss_mib"] = peak_rss_mib()
        (tmp / "conversion.json").write_text(json.dumps(facts, indent=2) + "\n")
        write_model_card(tmp, facts, chosen)
        publish_dir(tmp, output_dir)
    except BaseException as exc:  # errors, Ctrl-C, SIGTERM (raised by the CLI): no half-written folder is left
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:  # full disk, read-only file system
            raise cannot_write(output_dir, exc) from None
        raise
    log(f"done in {time.perf_counter() - t0:.1f} s: {output_dir}")
    return output_dir


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("cvt-port")
    except Exception:  # running from a source tree that was never installed
        return "0+unknown"


__all__ = ["convert", "PARITY_TOLERANCE"]
