"""cvt_port: convert Microsoft's original CvT checkpoints to Hugging Face, with proof of parity."""

from .errors import BadInput, ParityError
from .hf import load_model

__all__ = ["BadInput", "ParityError", "convert", "load_model"]


def convert(checkpoint, output_dir, variant=None, overwrite=False, **kwargs):
    """Convert an original checkpoint into a Hugging Face folder; returns the folder's path."""
    from .conversion import convert as _convert

    return _convert(checkpoint, output_dir, variant=variant, overwrite=overwrite, **kwargs)
