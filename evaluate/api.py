"""The Python API under ``python -m evaluate``: a regression check in a pytest, a notebook or a sweep
calls it instead of shelling out. ``evaluate`` is a namespace package (it shares ``site-packages/
evaluate/`` with Hugging Face's library), so import from this module::

    from evaluate.api import evaluate_model

    result = evaluate_model(model="./cvt-13-224", data="/data/imagenet/val", reference="CvT-13-224x224-IN-1k.pth",
                            subset=5000, accelerator="cpu")
    result.verdict, result.top1, result.predictions[0].top1("converted")

or build an :class:`EvalPlan` and :func:`run_plan` it (what the CLI does). Errors are exceptions:
:class:`~cvt_port.errors.BadInput` (a :class:`PlanError` names the plan field) for input that cannot
be used, :class:`Interrupted` when a signal stopped the run; the gate's verdict is
``result.verdict`` ("pass", "fail", "not made") and ``result.exit_status`` the CLI's exit status.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from .runtime.interrupts import Interrupted
from .plan import (DEFAULT_OUTPUT, DataSpec, EvalPlan, Mode, ModelEntry, ModelKind, ModelSpec, PlanError, Preprocessing,
                   ReportSpec, RunSpec)
from .plan_values import field_default, input_names, plan_parts
from .result import EvalResult, ManyEvalResult, Prediction, SuiteResult, exit_status
from . import run as _run

__all__ = [
    "DEFAULT_OUTPUT", "DataSpec", "EvalPlan", "EvalResult", "Interrupted", "ManyEvalResult", "Mode", "ModelEntry",
    "ModelKind", "ModelSpec",
    "PlanError", "Prediction", "Preprocessing", "ReportSpec", "RunSpec", "SuiteResult", "build_cache", "evaluate_model",
    "exit_status", "run_plan",
]


# evaluate_model's keywords are the plan's fields and inputs (evaluate.plan_values: models_file), under these names
# where the field's own would not read well in a call; the fields that are not keywords, and why. The keywords are
# the CLI's flags, name for name (tests/test_api.py compares both sets both ways)
KEYWORDS = {"data.source": "data", "data.revision": "data_revision", "report.loggers": "logger"}
NOT_KEYWORDS = {"models.extra_models": "several models are model=[A, B, ...] or models_file=FILE",
                "data.gate": "a data set's own gate is given per set in a suite file (suite=)",
                "report.command": "the call itself is recorded as the command"}
# where a call's default differs from the plan's: a library call writes and prints nothing unless asked
API_DEFAULTS = {"output": None, "summary": False}
REQUIRED = ("model",)  # and data, or a suite of data sets (the plan says which is missing)


def _signature() -> inspect.Signature:
    params = []
    for name in input_names():
        if name in NOT_KEYWORDS:
            continue
        keyword = KEYWORDS.get(name, name.split(".")[1])
        default = inspect.Parameter.empty if keyword in REQUIRED else API_DEFAULTS.get(keyword, field_default(name))
        params.append(inspect.Parameter(keyword, inspect.Parameter.KEYWORD_ONLY, default=default))
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)  # the required ones first
    return inspect.Signature(params, return_annotation="EvalResult | ManyEvalResult | SuiteResult")


def evaluate_model(**options) -> EvalResult | ManyEvalResult | SuiteResult:
    """Evaluate ``model`` on ``data``: one keyword per plan field (the CLI's flags; see ``help(evaluate_model)`` or
    :data:`KEYWORDS`). Nothing is written unless ``output`` names a folder; nothing is printed but Lightning's
    progress bar unless ``summary``; Lightning's banners, tips and warnings stay off stderr unless ``verbose``, as
    on the command line. ``models_file``: more models, one ``FOLDER [CONFIG]`` per line, after ``model``.
    ``update_card``/``push_to_hub`` (with ``create_pr``, ``private``, ``revision``) release after a PASSED gate only
    (:mod:`evaluate.reports.release`); an upload that fails after a pass raises ``ReleaseError``. ``baseline``: an earlier run's output folder to compare with
    (``result.record["baseline"]``).

    Several models on the same batches: ``model=[A, B, ...]``, each a folder/Hub id or a ``(folder, config)`` pair
    (``config`` applies to the others); the result is then a :class:`ManyEvalResult` (``result.runs``,
    ``result.for_model(name)``, the worst verdict as ``result.verdict``).

    Several test sets: ``suite="suite.yaml"`` instead of ``data`` (:mod:`evaluate.suite`); the result is then a
    :class:`SuiteResult` (``result.sets``, ``result.for_set(name)``, the worst set's verdict as ``result.verdict``)."""
    bound = evaluate_model.__signature__.bind(**options)  # an unknown or missing keyword: TypeError, as for any call
    command = _call("evaluate_model", bound.arguments)
    bound.apply_defaults()
    field_of = {KEYWORDS.get(name, name.split(".")[1]): name for name in input_names() if name not in NOT_KEYWORDS}
    values = {field_of[k]: v for k, v in bound.arguments.items()}
    models, data, run, report = plan_parts({**values, "report.command": command})
    return run_plan(EvalPlan(models, data, run, report))


evaluate_model.__signature__ = _signature()


def run_plan(plan: EvalPlan) -> EvalResult | ManyEvalResult | SuiteResult:
    """Run a plan: every model of it in one pass (:func:`evaluate.run.run_plan`); one model gives an
    :class:`EvalResult`, several a :class:`ManyEvalResult`, a suite of data sets (``data.suite``) a
    :class:`SuiteResult`."""
    return _run.run_plan(plan)


def build_cache_for(plan: EvalPlan, cache_dir: Path, overwrite: bool = False) -> tuple[Path, int, list[str]]:
    """Decode and resize the plan's images once into ``cache_dir``, one preprocessing per distinct protocol of its
    models: (the cache, images, pixel keys). A folder holding anything else (a cache of other images or settings)
    is refused unless ``overwrite``."""
    return _run.build_cache_for(plan, Path(cache_dir), overwrite)


def _call(name: str, arguments: dict) -> str:
    """``evaluate_model(model='m', data='d', subset=100)``: the call as made, its defaults left out (provenance)."""
    defaults = {k: p.default for k, p in evaluate_model.__signature__.parameters.items()}
    shown = [f"{k}={str(v)!r}" if isinstance(v, (str, Path)) else f"{k}={v!r}"  # str(): Path, Preprocessing
             for k, v in arguments.items() if k in defaults and v != defaults[k]]
    return f"{name}({', '.join(shown)})"


def build_cache(plan: EvalPlan, cache_dir: str | Path, overwrite: bool = False) -> Path:
    """Decode and resize the plan's images once into ``cache_dir`` (runs then read it with
    ``RunSpec(cache_dir=...)``); returns the cache folder."""
    return build_cache_for(plan, Path(cache_dir), overwrite)[0]
