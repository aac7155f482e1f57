"""cvt_port: convert Microsoft's original CvT checkpoints to Hugging Face, with proof of parity."""

from .errors import BadInput, ParityError

__all__ = ["BadInput", "ParityError", "convert", "load_model"]


def load_model(path, **from_pretrained_kwargs):
    """A converted folder (or Hub id) as a CvtForImageClassification computing what the original computed."""
    from .hf import load_model as _load_model  # transformers is imported on first use, not on `import cvt_port`

    return _load_model(path, **from_pretrained_kwargs)


def convert(checkpoint, output_dir, variant=None, overwrite=False, **kwargs):
    """Convert an original checkpoint into a Hugging Face folder; returns the folder's path."""
    from .conversion import convert as _convert

    return _convert(checkpoint, output_dir, variant=variant, overwrite=overwrite, **kwargs)
