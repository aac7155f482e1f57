"""Synthetic inputs the tests and the benchmarks share: random original-format checkpoints
(:mod:`benchmarks.synthetic.checkpoints`) and photo-like images (:mod:`benchmarks.synthetic.photos`).

Why a top-level package of the repository and not part of ``cvt_port`` or ``evaluate``: a converter's or an
evaluator's user has real checkpoints and real photos; these makers exist to exercise the code without them,
so they stay out of the wheel (``[tool.setuptools] packages`` names what ships) and out of its API. The tests
(``tests/conftest.py`` puts the repository on ``sys.path``) and the benchmarks (run from the checkout, as
``python -m benchmarks``; ``benchmarks/gpu_check.sh`` sets ``PYTHONPATH``) import them from the checkout.
"""
