"""Random checkpoints in the original (release) format: a plain state dict of :class:`OriginalCvT`, saved as
Microsoft's release files are, seeded.

``randomize_`` alone (:func:`cvt_port.reference.randomize_`) gives every parameter and buffer a value a trained
model could have, which is what a conversion check needs; but its features hardly depend on the image (the
image's part is ~1% of their common part), so such a model predicts one class everywhere and any accuracy or
agreement figure on it is trivial. ``image_dependent=True`` makes the image decide: the weights of 2 or more
dimensions but the head's are 5x ``randomize_``'s (the image's part of the features becomes ~25%, so a head
needs no large gain, which would amplify rounding), and the head is either set by :func:`spread_head_`
(random, centred on the features of probe images: photos get many classes) or fitted by the caller (the
tests' colour-reading tiny model, tests/evalkit.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cvt_port.reference import OriginalCvT, randomize_

from .photos import synthetic_rgb


def _variant(variant):
    """A :class:`~cvt_port.variants.Variant`, or one named by a variant name or a YAML path."""
    if isinstance(variant, (str, Path)):
        from cvt_port.variants import get_variant

        return get_variant(str(variant))
    return variant


def random_reference(variant, seed: int = 0, *, image_dependent: bool = False) -> OriginalCvT:
    """A seeded random :class:`OriginalCvT` of ``variant`` (object, name or YAML path), in eval mode; with
    ``image_dependent`` its non-head weights 5x (see the module's docstring) and its head still random."""
    model = randomize_(OriginalCvT(_variant(variant).architecture), seed=seed).eval()
    if image_dependent:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim >= 2 and not name.startswith("head"):
                    p.mul_(5)
    return model


@torch.no_grad()
def spread_head_(model: OriginalCvT, variant, *, probe_images: int = 16, seed: int = 0, device: str = "cpu") -> dict:
    """Set the head from the features of ``probe_images`` photo-like images (seeds 10,000...; a caller's photos
    should use others): ``W / sd``, bias ``-W @ mean``, W random with logits of std ~3. The probe runs in IEEE
    float32 on ``device``. What the probe saw: its distinct top-1 classes, the features' mean std."""
    from evaluate.runtime.numerics import float32_mode

    pre = _variant(variant).preprocessing
    size = pre.img_size
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    probe = torch.stack([torch.from_numpy(synthetic_rgb((size, size), 10_000 + i)).permute(2, 0, 1)
                         for i in range(probe_images)]).float().div(255).sub(mean).div(std)
    with float32_mode(False):
        f = model.to(device).forward_features(probe.to(device)).double().cpu()
    model.cpu()
    mu, sd = f.mean(0), f.std(0).clamp_min(1e-6)
    g = torch.Generator().manual_seed(seed + 1)
    w = 3 * torch.randn(model.head.weight.shape, generator=g, dtype=torch.float64) / f.shape[1] ** 0.5 / sd
    model.head.weight.copy_(w.float())
    model.head.bias.copy_((-(w @ mu)).float())
    logits = (f @ w.T - w @ mu).float()
    return {"probe_images": probe_images, "probe_distinct_top1": len(set(logits.argmax(-1).tolist())),
            "probe_feature_sd_mean": round(float(sd.mean()), 6)}


def save_release_checkpoint(variant, path: Path, seed: int = 0) -> OriginalCvT:
    """:func:`random_reference` of ``variant`` saved at ``path`` exactly as the release files are; the model.
    (An image-dependent one: :func:`random_reference` with ``image_dependent``, a head, then the same save.)"""
    model = random_reference(variant, seed)
    save_state(model, path)
    return model


def save_state(model: OriginalCvT, path: Path) -> Path:
    """``model``'s plain state dict at ``path``: the release files' format."""
    torch.save(model.state_dict(), path)
    return Path(path)
