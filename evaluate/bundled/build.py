"""Rebuild the bundled default data and model: ``python -m evaluate.bundled.build``.

``python -m evaluate`` with no arguments needs something real to convert and evaluate without
a download: this script makes it. It

1. splits scikit-learn's ``load_digits()`` (1,797 real 8x8 handwritten digits, 10 classes)
   into a fixed stratified train/validation split and writes only the validation images as
   8-bit grayscale PNG files in an ImageFolder layout (``digits/val/<digit>/<digit>_<idx>.png``);
2. trains a tiny CvT (:class:`cvt_port.reference.OriginalCvT`, so its keys are exactly those
   of the original release files) on the training split, using the very preprocessing the
   evaluation uses (8x8 -> RGB -> bicubic warp to 32x32 -> ImageNet mean/std), in train mode
   so the BatchNorm running statistics are real trained values;
3. saves it in the original release format (a plain ``state_dict`` of float32 tensors);
4. measures its top-1/top-5 on the PNG files read back from disk and records them, with the
   architecture and preprocessing, in ``configs/cvt-tiny-digits.yaml``.

Everything is seeded and the training runs on one thread with deterministic algorithms, so
two runs give byte-identical PNGs and checkpoint and the same recorded accuracy. scikit-learn
is an optional extra (``pip install cvt-port[bundled]``) that only this script needs, so it is
imported inside the functions that use it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cvt_port.reference import OriginalCvT
from cvt_port.variants import CONFIGS_DIR, Architecture

from evaluate.verdict.gate_settings import DEFAULTS as GATE_DEFAULTS

BUNDLED_DIR = Path(__file__).resolve().parent
DIGITS_DIR = BUNDLED_DIR / "digits"
CHECKPOINT_PATH = BUNDLED_DIR / "cvt-tiny-digits.pth"
CONFIG_PATH = CONFIGS_DIR / "cvt-tiny-digits.yaml"

VARIANT_NAME = "cvt-tiny-digits"
SPLIT_SEED = 0
VAL_FRACTION = 0.2
TRAIN_SEED = 0
CLASS_NAMES = [str(d) for d in range(10)]

# depth[i] > i for every stage: transformers' CvtStage indexes its per-stage drop-path list
# (length depth[i]) with the stage index, so shallower stages cannot be built in Hugging Face
# (IndexError), and the bundled model must convert. Every released CvT satisfies this too.
ARCH = Architecture(
    depth=(1, 2, 3),
    num_heads=(1, 2, 4),
    embed_dim=(16, 32, 64),
    patch_sizes=(7, 3, 3),
    patch_stride=(4, 2, 2),
    patch_padding=(2, 1, 1),
    mlp_ratio=4.0,
    cls_token=(False, False, True),
    num_classes=10,
    in_chans=3,
    activation="quick_gelu",
)
IMG_SIZE = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# Training schedule: small enough for well under two minutes on two CPU cores.
EPOCHS = 60
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 0.05
MAX_SHIFT = 1  # augmentation: random shifts of the 8x8 digit by up to this many pixels


# ----------------------------------------------------------------------------------- data


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map scikit-learn's 0..16 digit intensities to 0..255, rounding half up.

    Integer arithmetic (``(v*255 + 8) // 16``) so the result never depends on float rounding
    modes: the PNGs and the training inputs come from exactly these bytes.
    """
    v = np.asarray(values).astype(np.int64)
    if v.min() < 0 or v.max() > 16:
        raise ValueError("digit intensities must lie in 0..16")
    return ((v * 255 + 8) // 16).astype(np.uint8)


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N,8,8), labels (N,), train indices, val indices), always the same split.

    A stratified split with a fixed seed keeps every class represented in the validation
    images in its natural proportion, and makes the shipped PNGs reproducible.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits_to_uint8(digits.images)
    labels = digits.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        idx, test_size=VAL_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return images, labels, np.sort(train_idx), np.sort(val_idx)


def export_validation(out_dir: Path) -> list[Path]:
    """Write the validation images as 8-bit grayscale PNGs under ``out_dir/val/<digit>/``.

    File names carry the scikit-learn index (``3_0123.png``) so each image is traceable to
    its source. An existing ``out_dir/val`` is replaced so stale files cannot linger.
    Returns the written paths in sorted order.
    """
    images, labels, _, val_idx = digits_split()
    val_root = Path(out_dir) / "val"
    if val_root.exists():
        shutil.rmtree(val_root)
    written = []
    for i in val_idx:
        digit = CLASS_NAMES[labels[i]]
        path = val_root / digit / f"{digit}_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").save(path, format="PNG", optimize=True)
        written.append(path)
    return sorted(written)


def preprocess(img: Image.Image) -> torch.Tensor:
    """Evaluation preprocessing (the YAML's ``warp``/bicubic/mean-std), used for training too.

    RGB, resize straight to 32x32 with PIL bicubic, scale to [0, 1], normalise. Training on
    exactly this keeps the recorded accuracy meaningful for the evaluation harness.
    """
    img = img.convert("RGB").resize((IMG_SIZE, IMG_SIZE), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def _shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The 8x8 image moved by (dy, dx) pixels with zero fill (digits sit on a black ground)."""
    out = np.zeros_like(img)
    h, w = img.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _training_tensors(images: np.ndarray, train_idx: np.ndarray) -> torch.Tensor:
    """Preprocessed training inputs for every shift: (num_shifts, N, 3, 32, 32).

    Shifts are applied to the 8x8 uint8 image before the PIL preprocessing, so every
    augmented input is something the evaluation pipeline could actually produce. Computing
    them once up front keeps PIL out of the training loop.
    """
    shifts = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    return torch.stack(
        [
            torch.stack([preprocess(Image.fromarray(_shifted(images[i], dy, dx), mode="L")) for i in train_idx])
            for dy, dx in shifts
        ]
    )


# ------------------------------------------------------------------------------- training


def train(epochs: int = EPOCHS) -> tuple[OriginalCvT, float]:
    """Train the tiny CvT on the training split; returns (model in eval mode, seconds).

    One thread and deterministic algorithms make the weights reproducible run to run; the
    model is in train mode throughout so BatchNorm running statistics are learned.
    """
    images, labels, train_idx, _ = digits_split()
    inputs = _training_tensors(images, train_idx)
    targets = torch.from_numpy(labels[train_idx])

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(TRAIN_SEED)
        g = torch.Generator().manual_seed(TRAIN_SEED)
        model = OriginalCvT(ARCH)
        _init_weights(model)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        n = len(train_idx)
        steps_per_epoch = (n + BATCH_SIZE - 1) // BATCH_SIZE
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=LR, total_steps=epochs * steps_per_epoch, pct_start=0.1
        )
        start = time.perf_counter()
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            shift = torch.randint(0, inputs.shape[0], (n,), generator=g)
            for s in range(0, n, BATCH_SIZE):
                b = perm[s : s + BATCH_SIZE]
                loss = F.cross_entropy(model(inputs[shift[b], b]), targets[b], label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        seconds = time.perf_counter() - start
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    return model.eval(), seconds


@torch.no_grad()
def _init_weights(model: torch.nn.Module) -> None:
    """Truncated-normal(0.02) linear weights and zero biases, as the original CvT initialises."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.trunc_normal_(m.weight, std=0.02)
            torch.nn.init.zeros_(m.bias)
    for name, p in model.named_parameters():
        if name.endswith("cls_token"):
            torch.nn.init.trunc_normal_(p, std=0.02)


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Save like the original release: a plain ``state_dict`` of float32 (and BN counter) tensors."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


# ----------------------------------------------------------------------------- evaluation


def val_files(root: Path) -> list[tuple[Path, int]]:
    """(path, class index) for every PNG under ``root/val/<class name>/``, sorted by path."""
    return [(p, CLASS_NAMES.index(p.parent.name)) for p in sorted((Path(root) / "val").glob("*/*.png"))]


@torch.no_grad()
def measure(model: torch.nn.Module, root: Path) -> tuple[float, float, int]:
    """(top-1 %, top-5 %, number of images) on the PNGs read back from disk, in eval mode."""
    files = val_files(root)
    if not files:
        raise FileNotFoundError(f"no validation PNGs under {root}/val")
    x = torch.stack([preprocess(Image.open(p)) for p, _ in files])
    y = torch.tensor([c for _, c in files])
    model.eval()
    logits = torch.cat([model(x[s : s + 256]) for s in range(0, len(x), 256)])
    top5 = logits.topk(5, dim=1).indices
    correct1 = int((top5[:, 0] == y).sum())
    correct5 = int((top5 == y[:, None]).any(dim=1).sum())
    return 100.0 * correct1 / len(y), 100.0 * correct5 / len(y), len(y)


# --------------------------------------------------------------------------------- config


def _flow(values) -> str:
    return "[" + ", ".join(_scalar(v) for v in values) + "]"


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def config_text(top1: float, top5: float, num_samples: int) -> str:
    """The variant YAML for the bundled model, written by hand to match the other configs' style.

    Accuracies are stored unrounded (``repr`` of the float round-trips exactly through YAML), so
    the evaluation harness can compare its own measurement with the recorded one exactly.
    """
    arch = asdict(ARCH)
    lines = [
        f"# {VARIANT_NAME}: a tiny CvT trained on scikit-learn digits, bundled as the default model for",
        "# `python -m evaluate` (no download needed). Original release format (.pth state_dict).",
        "# GENERATED by `python -m evaluate.bundled.build`: do not edit by hand, rebuild instead.",
        f"name: {VARIANT_NAME}",
        "release_file: null",
        "hub_id: null",
        'pretrained_on: "scikit-learn digits (train split)"',
        "architecture:",
        *(f"  {k}: {_flow(v) if isinstance(v, tuple) else _scalar(v)}" for k, v in arch.items()),
        "preprocessing:",
        f"  img_size: {IMG_SIZE}",
        "  resize: warp",
        "  crop_pct: 1.0",
        "  interpolation: bicubic",
        f"  mean: {_flow(MEAN)}",
        f"  std: {_flow(STD)}",
        f"labels: {_flow(CLASS_NAMES)}",
        "reference:",
        f"  top1: {top1!r}",
        f"  top5: {top5!r}",
        '  source: "measured by python -m evaluate.bundled.build on the bundled validation images"',
        '  dataset: "bundled digits validation"',
        f"  num_samples: {num_samples}",
        f"gate: {{top1_tolerance: {GATE_DEFAULTS.top1_tolerance}, min_agreement: {GATE_DEFAULTS.min_agreement}}}",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- main


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluate.bundled.build", description=__doc__.splitlines()[0])
    parser.add_argument("--export-only", action="store_true", help="only (re)write the validation PNGs")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    files = export_validation(DIGITS_DIR)
    print(f"wrote {len(files)} validation PNGs under {DIGITS_DIR / 'val'} ({_tree_size(DIGITS_DIR) / 1024:.1f} KiB)")
    if args.export_only:
        return 0

    model, seconds = train(args.epochs)
    save_checkpoint(model, CHECKPOINT_PATH)
    top1, top5, n = measure(model, DIGITS_DIR)
    CONFIG_PATH.write_text(config_text(top1, top5, n))

    print(f"trained {VARIANT_NAME} in {seconds:.1f} s ({args.epochs} epochs)")
    print(f"validation top-1 {top1:.2f}% top-5 {top5:.2f}% on {n} images")
    print(f"{CHECKPOINT_PATH} {CHECKPOINT_PATH.stat().st_size / 1024:.1f} KiB sha256 {_sha256(CHECKPOINT_PATH)}")
    print(f"{CONFIG_PATH} sha256 {_sha256(CONFIG_PATH)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
