"""Activation memory per variant, batch and attention, without a GPU: ``python -m benchmarks.memory_table``.

How: the forward pass runs under ``FakeTensorMode`` (shapes and dtypes only, no compute, no memory), and a
dispatch mode counts the bytes of every tensor an operator returns while it is alive (freed when its last
reference goes). The peak of that count is the activation memory a device needs on top of the weights in
inference mode (caching-allocator rounding and cuDNN/cuBLAS workspaces not included: add about 10 %).
It grows linearly with the batch, so batch 1 is measured and scaled, and checked at batch 8.
"""

from __future__ import annotations

import sys
import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GiB = 1024 ** 3


class _LiveBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t._is_view():
                key = id(t.untyped_storage())
                if key in self.seen:
                    continue
                self.seen.add(key)
                size = t.untyped_storage().nbytes()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(t.untyped_storage(), self._free, key, size)
        return out

    def _free(self, key: int, size: int) -> None:
        self.live -= size
        self.seen.discard(key)


def activation_bytes(model: torch.nn.Module, batch: int, size: int) -> int:
    with FakeTensorMode(allow_non_fake_inputs=True) as fake:
        fmodel = model  # parameters stay real; inputs and activations are fake
        x = fake.from_tensor(torch.zeros(batch, 3, size, size))
        counter = _LiveBytes()
        with torch.inference_mode(), counter:
            out = fmodel(x)
            del out
    return counter.peak


VARIANTS = ("cvt-13-224", "cvt-13-384", "cvt-21-224", "cvt-21-384", "cvt-w24-384-22k")
BATCHES = (1, 64)


def table(variants=VARIANTS) -> list[str]:
    """One Markdown row per variant: weights and activations (GiB) of the converted model (einsum and sdpa
    attention) and of the original, at batch 1 (measured) and 64 (scaled, checked linear at batch 2)."""
    from cvt_port.attention import set_attention
    from cvt_port.hf import build_hf_model, hf_config
    from cvt_port.reference import OriginalCvT
    from cvt_port.variants import get_variant

    rows = ["| variant | size | weights MiB | converted einsum, batch 1 / 64 | converted sdpa, batch 1 / 64 "
            "| original, batch 1 / 64 |", "|---|---|---|---|---|---|"]
    for name in variants:
        v = get_variant(name)
        size = v.preprocessing.img_size
        converted = build_hf_model(hf_config(v)).eval()
        original = OriginalCvT(v.architecture).eval()
        weights = sum(p.numel() * p.element_size() for p in converted.parameters()) / 2 ** 20
        cells = []
        for model, attention in ((converted, "einsum"), (converted, "sdpa"), (original, None)):
            if attention:
                set_attention(model, attention)
            one, two = activation_bytes(model, 1, size), activation_bytes(model, 2, size)
            assert abs(two - 2 * one) <= 0.01 * two, (name, attention, one, two)  # linear in the batch
            cells.append(f"{one / 2 ** 20:.0f} MiB / {64 * one / GiB:.1f} GiB")
        rows.append(f"| {name} | {size} | {weights:.0f} | " + " | ".join(cells) + " |")
        print(rows[-1], file=sys.stderr)
    return rows


if __name__ == "__main__":
    print("\n".join(table(sys.argv[1:] or VARIANTS)))
