"""Third-party chatter kept off the user's screen for the length of a run: Lightning's banners ("GPU available",
"TPU available", tips), its warnings about worker counts and srun, and transformers' loading bars, unless the plan
asks for them (``report.verbose``, ``--verbose``).

Why a context and not a setting made once: the Python API is a library call inside someone else's process (a
pytest, a notebook), so what is changed for the run (logger levels, warning filters, the progress-bar switch) is
put back when it ends; the CLI enters the same context around its whole work. Lightning resets its loggers' level
when it is imported, so it is imported first."""

from __future__ import annotations

import contextlib
import logging
import warnings

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
IGNORED_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*", r".*does not have many workers.*",
                    r".*`srun` command is available.*")


@contextlib.contextmanager
def quiet_libraries(verbose: bool):
    """Within: Lightning logs warnings and worse only, the warnings above are ignored and transformers' progress
    bars are off; everything is restored on exit. ``verbose``: nothing changes."""
    if verbose:
        yield
        return
    import lightning  # noqa: F401  (before its loggers' levels are set: importing it resets them)
    from transformers.utils import logging as hf_logging

    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            for message in IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            for name in LIGHTNING_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
