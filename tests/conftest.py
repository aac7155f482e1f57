"""Shared fixtures: original-format checkpoints the tests make themselves (random, seeded: :mod:`benchmarks.synthetic`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist already runs one worker per core: torch's own threads on top of that only fight for the same
    # cores (on 2 cores, 2 workers x 2 threads cost twice the CPU time for a few % less wall time). Set before
    # torch is imported; processes the tests start inherit it (torchrun sets its own).
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ (with its synthetic makers) is not installed: they are imported from the checkout
    sys.path.append(str(REPO))  # (appended: an installed cvt_port or evaluate still comes first)

from benchmarks.synthetic.checkpoints import save_release_checkpoint  # noqa: E402,F401  (the tests import it from here)


@pytest.fixture(scope="session")
def cvt13_checkpoint(tmp_path_factory):
    """(path, reference model) of a random CvT-13 named like the release file."""
    path = tmp_path_factory.mktemp("ckpt") / "CvT-13-224x224-IN-1k.pth"
    model = save_release_checkpoint("cvt-13-224", path)
    return path, model


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The bundled original checkpoint (trained: predictions vary and are mostly right), converted once for the
    whole session. Tests read it; one that changes a model changes a copy."""
    import cvt_port
    from evaluate.default import CHECKPOINT, VARIANT

    return cvt_port.convert(CHECKPOINT, tmp_path_factory.mktemp("digits") / "hf", variant=VARIANT, log=lambda m: None)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny 1000-class CvT in the release format, converted with cvt_port (see evalkit)."""
    from evalkit import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def nothing_loaded(monkeypatch):
    """Any model loaded or candidate built fails the test: a bad input (a gate setting, a suite file) is found
    before. A test file may extend it (test_suite_sets: no model folder read, no Trainer made either)."""
    import evaluate.job
    import evaluate.run

    monkeypatch.setattr(evaluate.run, "load_models", loaded_too_soon)
    monkeypatch.setattr(evaluate.job, "build_candidates", loaded_too_soon)


def loaded_too_soon(*args, **kwargs):
    raise AssertionError("a model was loaded (or its folder read) before the input was checked")
