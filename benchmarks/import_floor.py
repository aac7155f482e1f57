"""``python -m benchmarks.import_floor``: only import torch and transformers' CvT model, then exit.

The least any converter pays that runs the converted model to check it (the conversion benchmark times this
process beside ``python -m cvt_port convert`` and :mod:`benchmarks.baseline_convert`).
"""

import gc

import torch  # noqa: F401
import transformers.models.cvt.modeling_cvt  # noqa: F401

gc.freeze()  # as python -m cvt_port does before it exits
