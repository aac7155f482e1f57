"""cvt_port: convert Microsoft's original CvT checkpoints to Hugging Face, with proof of parity."""

from .errors import BadInput, ParityError

__all__ = ["BadInput", "ParityError", "convert", "convert_many", "load_model"]


def load_model(path, **from_pretrained_kwargs):
    """A converted folder (or Hub id) as a CvtForImageClassification computing what the original computed."""
    from .hf import load_model as _load_model  # transformers is imported on first use, not on `import cvt_port`

    return _load_model(path, **from_pretrained_kwargs)


def convert(checkpoint, output_dir, variant=None, overwrite=False, **kwargs):
    """Convert an original checkpoint into a Hugging Face folder; returns the folder's path. Keyword
    ``cvt_model``/``image_size`` are the legacy script's flags, checked against the weights."""
    from .conversion import convert as _convert

    return _convert(checkpoint, output_dir, variant=variant, overwrite=overwrite, **kwargs)


def convert_many(folder, output_root, variant=None, overwrite=False, **kwargs):
    """Convert every original ``.pth`` file of ``folder`` into ``output_root/<file stem>`` (each variant
    inferred); returns one :class:`cvt_port.folder.FileResult` per file (``worst_status`` gives the exit status)."""
    from .folder import convert_many as _convert_many

    return _convert_many(folder, output_root, variant=variant, overwrite=overwrite, **kwargs)
