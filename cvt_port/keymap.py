"""The key mapping original -> Hugging Face (spec section 3), declared once as a table.

Each original key matches exactly one anchored pattern; the table works for any depth and
number of stages because stage and block indices are captured, not enumerated.
"""

from __future__ import annotations

import re

_STAGE = r"^stage(\d+)\."
_BLOCK = r"^stage(\d+)\.blocks\.(\d+)\."
_HF_STAGE = r"cvt.encoder.stages.\1."
_HF_BLOCK = r"cvt.encoder.stages.\1.layers.\2."
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_WB = r"(weight|bias)"

ORIGINAL_TO_CONVERTED_KEY_MAPPING: list[tuple[str, str]] = [
    (_STAGE + rf"patch_embed\.proj\.{_WB}$", _HF_STAGE + r"embedding.convolution_embeddings.projection.\2"),
    (_STAGE + rf"patch_embed\.norm\.{_WB}$", _HF_STAGE + r"embedding.convolution_embeddings.normalization.\2"),
    (_STAGE + r"cls_token$", _HF_STAGE + r"cls_token"),
    *[
        row
        for x, X in (("q", "query"), ("k", "key"), ("v", "value"))
        for row in (
            (
                _BLOCK + rf"attn\.conv_proj_{x}\.conv\.weight$",
                _HF_BLOCK + rf"attention.attention.convolution_projection_{X}.convolution_projection.convolution.weight",
            ),
            (
                _BLOCK + rf"attn\.conv_proj_{x}\.bn\.{_BN}$",
                _HF_BLOCK + rf"attention.attention.convolution_projection_{X}.convolution_projection.normalization.\3",
            ),
            (_BLOCK + rf"attn\.proj_{x}\.{_WB}$", _HF_BLOCK + rf"attention.attention.projection_{X}.\3"),
        )
    ],
    (_BLOCK + rf"attn\.proj\.{_WB}$", _HF_BLOCK + r"attention.output.dense.\3"),
    (_BLOCK + rf"mlp\.fc1\.{_WB}$", _HF_BLOCK + r"intermediate.dense.\3"),
    (_BLOCK + rf"mlp\.fc2\.{_WB}$", _HF_BLOCK + r"output.dense.\3"),
    (_BLOCK + rf"norm1\.{_WB}$", _HF_BLOCK + r"layernorm_before.\3"),
    (_BLOCK + rf"norm2\.{_WB}$", _HF_BLOCK + r"layernorm_after.\3"),
    (rf"^norm\.{_WB}$", r"layernorm.\1"),
    (rf"^head\.{_WB}$", r"classifier.\1"),
]

_COMPILED = [(re.compile(p), r) for p, r in ORIGINAL_TO_CONVERTED_KEY_MAPPING]


def convert_key(key: str) -> str | None:
    """The Hugging Face name of one original key, or None when no rule covers it."""
    for pattern, repl in _COMPILED:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def convert_keys(keys) -> tuple[dict[str, str], list[str]]:
    """Map every key once: (original -> converted, keys no rule covers)."""
    mapped, unmapped = {}, []
    for k in keys:
        new = convert_key(k)
        if new is None:
            unmapped.append(k)
        else:
            mapped[k] = new
    return mapped, unmapped
