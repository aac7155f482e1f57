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

from pathlib import Path

from .interrupts import Interrupted
from .plan import (DEFAULT_OUTPUT, DataSpec, EvalPlan, Mode, ModelEntry, ModelKind, ModelSpec, PlanError, Preprocessing,
                   ReportSpec, RunSpec, default_num_workers)
from .plan import DEFAULT_LOG_DIR, parse_loggers
from .result import EvalResult, ManyEvalResult, Prediction, exit_status
from . import run as _run

__all__ = [
    "DEFAULT_OUTPUT", "DataSpec", "EvalPlan", "EvalResult", "Interrupted", "ManyEvalResult", "Mode", "ModelEntry",
    "ModelKind", "ModelSpec",
    "PlanError", "Prediction", "Preprocessing", "ReportSpec", "RunSpec", "build_cache", "evaluate_model",
    "exit_status", "run_plan",
]


def evaluate_model(
    *,
    model: str | Path | list | tuple,
    data: str | Path,
    config: str | Path | None = None,
    reference: str | Path | None = None,
    stock: bool = False,
    with_stock: bool = False,
    trust_remote_code: bool = False,
    labels_file: str | Path | None = None,
    split: str = "validation",
    image_column: str | None = None,
    label_column: str | None = None,
    subset: int | None = None,
    seed: int = 0,
    subset_file: str | Path | None = None,
    preprocessing: str | Preprocessing = Preprocessing.RELEASE,
    skip_bad_images: bool = False,
    streaming: bool = False,
    data_revision: str | None = None,
    batch_size: int | str = 64,
    num_workers: int | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int | None = None,
    strategy: str = "auto",
    precision: str = "32-true",
    cache_dir: str | Path | None = None,
    attention: str = "einsum",
    compile: bool = False,
    tf32: bool = False,
    reference_chunk: int | None = None,
    output: str | Path | None = None,
    summary: bool = False,
    update_card: bool = False,
    push_to_hub: str | None = None,
    create_pr: bool = False,
    private: bool = False,
    revision: str | None = None,
    logger: str | list[str] | tuple[str, ...] = (),
    log_dir: str | Path = DEFAULT_LOG_DIR,
    baseline: str | Path | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``data`` (the keyword arguments are the CLI's flags). Nothing is written
    unless ``output`` names a folder; nothing is printed but Lightning's progress bar unless ``summary``.
    ``update_card``/``push_to_hub`` (with ``create_pr``, ``private``, ``revision``) release after a PASSED gate
    only (:mod:`evaluate.release`); an upload that fails after a pass raises ``ReleaseError``.
    ``baseline``: an earlier run's output folder to compare with (``result.record["baseline"]``).

    Several models on the same batches: ``model=[A, B, ...]``, each a folder/Hub id or a ``(folder, config)`` pair
    (``config`` applies to the others); the result is then a :class:`ManyEvalResult` (``result.runs``,
    ``result.for_model(name)``, the worst verdict as ``result.verdict``)."""
    command = _call("evaluate_model", locals())
    entries = _entries(model, config)
    return run_plan(EvalPlan(
        models=ModelSpec(model=entries[0].model, config=entries[0].config, extra_models=entries[1:],
                         reference=_path(reference), stock=stock, with_stock=with_stock,
                         trust_remote_code=trust_remote_code),
        data=DataSpec(source=str(data), labels_file=_path(labels_file), split=split, image_column=image_column,
                      label_column=label_column, subset=subset, seed=seed, subset_file=_path(subset_file),
                      preprocessing=_preprocessing(preprocessing), skip_bad_images=skip_bad_images,
                      streaming=streaming, revision=data_revision),
        run=RunSpec(batch_size=batch_size, num_workers=default_num_workers() if num_workers is None else num_workers,
                    accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                    precision=precision, cache_dir=_path(cache_dir), attention=attention, compile=compile,
                    tf32=tf32, reference_chunk=reference_chunk),
        report=ReportSpec(output=_path(output), summary=summary, update_card=update_card, push_to_hub=push_to_hub,
                          create_pr=create_pr, private=private, revision=revision, loggers=parse_loggers(logger),
                          log_dir=Path(log_dir), baseline=_path(baseline),
                          command=command),
    ))


def run_plan(plan: EvalPlan) -> EvalResult | ManyEvalResult:
    """Run a plan (:func:`evaluate.run.run_plan`); several models (``plan.models.extra_models``) in one pass
    (:func:`evaluate.several_models.run_many`)."""
    if plan.models.extra_models:
        from .several_models import run_many

        return run_many(plan)
    return _run.run_plan(plan)


def build_cache_for(plan: EvalPlan, cache_dir: Path, overwrite: bool = False) -> tuple[Path, int, list[str]]:
    """Decode and resize the plan's images once into ``cache_dir``: (the cache, images, modes); for several models
    one cache holding each distinct preprocessing (:func:`evaluate.several_models.build_many_cache`). A folder
    holding anything else (a cache of other images or settings) is refused unless ``overwrite``."""
    if plan.models.extra_models:
        from .several_models import build_many_cache

        return build_many_cache(plan, Path(cache_dir), overwrite)
    return _run.build_cache_for(plan, Path(cache_dir), overwrite)


def _call(name: str, arguments: dict) -> str:
    """``evaluate_model(model='m', data='d', subset=100)``: the call as made, its defaults left out (provenance)."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(evaluate_model).parameters.items()}
    shown = [f"{k}={str(v)!r}" if isinstance(v, (str, Path)) else f"{k}={v!r}"  # str(): Path, Preprocessing
             for k, v in arguments.items() if k in defaults and v != defaults[k]]
    return f"{name}({', '.join(shown)})"


def build_cache(plan: EvalPlan, cache_dir: str | Path, overwrite: bool = False) -> Path:
    """Decode and resize the plan's images once into ``cache_dir`` (runs then read it with
    ``RunSpec(cache_dir=...)``); returns the cache folder."""
    return build_cache_for(plan, Path(cache_dir), overwrite)[0]


def _entries(model, config) -> tuple[ModelEntry, ...]:
    """``model`` (one, or a list of folders and ``(folder, config)`` pairs) as the job's entries."""
    default = None if config is None else str(config)
    if isinstance(model, (str, Path)):
        return (ModelEntry(str(model), default),)
    entries = tuple(ModelEntry(str(m[0]), default if m[1] is None else str(m[1])) if isinstance(m, (tuple, list))
                    else ModelEntry(str(m), default) for m in model)
    if not entries:
        raise PlanError("models.model", "no model given (a converted folder or Hub id)")
    return entries


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _preprocessing(value: str | Preprocessing) -> Preprocessing:
    try:
        return Preprocessing(value)
    except ValueError:
        raise PlanError("data.preprocessing", f"choose one of {', '.join(p.value for p in Preprocessing)}",
                        value) from None
