"""``python -m benchmarks.baseline_convert SOURCE.pth TARGET.safetensors``: the plain way to re-save a checkpoint.

``torch.load(mmap=True, weights_only=True)`` + safetensors ``save_file`` of the same tensors, nothing else: the
baseline the conversion benchmark holds ``python -m cvt_port convert`` to (wall time and peak RSS).
"""

import sys

import torch
from safetensors.torch import save_file


def main(argv: list) -> int:
    source, target = argv
    state = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    save_file({k: v.contiguous() for k, v in state.items()}, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
