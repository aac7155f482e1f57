"""A plan from plain values by plan field (``{"data.subset": 100}``): what the API's keywords and the CLI's flags
give, converted once and the same way for both (paths, the preprocessing choice, logger lists, the job's models).

The fields are the plan's own (:data:`PARTS`): :func:`evaluate.api.evaluate_model` takes one keyword per field
and :mod:`evaluate.cli` one flag per field, so a field added to a spec is a keyword and a flag without a copy
(tests/test_api.py checks that none is missing)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Mapping

from .plan import DataSpec, ModelEntry, ModelSpec, PlanError, Preprocessing, ReportSpec, RunSpec, default_num_workers
from .plan import parse_loggers

PARTS = {"models": ModelSpec, "data": DataSpec, "run": RunSpec, "report": ReportSpec}
# what a caller may give beside the plan's fields, and the field it becomes (a keyword and a flag like the fields)
INPUTS = {"models.models_file": "models.extra_models"}  # one 'FOLDER [CONFIG]' per line, after models.model


def input_names() -> list[str]:
    """Every value a caller gives by name: the plan's fields and :data:`INPUTS`."""
    return [*plan_fields(), *INPUTS]


def plan_fields() -> list[str]:
    """Every plan field, ``part.name``, in the specs' order."""
    return [f"{part}.{f.name}" for part, spec in PARTS.items() for f in dataclasses.fields(spec)]


def field_default(name: str):
    """A field's default in its spec (None where it has none or a factory; None for an input, :data:`INPUTS`)."""
    if name in INPUTS:
        return None
    part, key = name.split(".")
    f = next(f for f in dataclasses.fields(PARTS[part]) if f.name == key)
    return None if f.default is dataclasses.MISSING else f.default


def plan_parts(values: Mapping[str, object]) -> tuple[ModelSpec, DataSpec, RunSpec, ReportSpec]:
    """The plan's typed parts from ``values`` by field; an absent field takes its spec's default. ``models.model``
    may be a list of models (folders, Hub ids or ``(folder, config)`` pairs; ``models.config`` applies to those
    without one): the job's entries, the first in ``model``/``config``, the others in ``extra_models``; the models of
    ``models.models_file`` (:func:`read_models_file`) come after them."""
    values = dict(values)
    listed = values.pop("models.models_file", None)
    if listed is not None:
        given = values.get("models.model")
        values["models.model"] = [*(model_entries(given, values.get("models.config")) if given else ()),
                                  *read_models_file(listed)]
    if "models.model" in values:
        entries = model_entries(values.pop("models.model"), values.get("models.config"))
        values.update({"models.model": entries[0].model, "models.config": entries[0].config})
        values["models.extra_models"] = (*entries[1:], *values.get("models.extra_models", ()))
    parts = []
    for part, spec in PARTS.items():
        hints = typing.get_type_hints(spec)
        given = {f.name: _convert(f"{part}.{f.name}", hints[f.name], values[f"{part}.{f.name}"])
                 for f in dataclasses.fields(spec) if f"{part}.{f.name}" in values}
        parts.append(spec(**given))
    return tuple(parts)


def read_models_file(path: str | Path) -> tuple[ModelEntry, ...]:
    """``FOLDER`` or ``FOLDER CONFIG`` per line (blank lines and ``#`` comments skipped); a one-line
    :class:`PlanError` naming the file and line otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError("models.models_file", f"cannot be read ({type(exc).__name__})", path) from None
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise PlanError("models.models_file", f"line {n} has {len(words)} words; give 'FOLDER' or 'FOLDER CONFIG' "
                            "per line", path)
        entries.append(ModelEntry(words[0], words[1] if len(words) == 2 else None))
    if not entries:
        raise PlanError("models.models_file", "names no model; give one 'FOLDER [CONFIG]' per line", path)
    return tuple(entries)


def model_entries(model, config) -> tuple[ModelEntry, ...]:
    """``model`` (one, or a list of folders, Hub ids, entries and ``(folder, config)`` pairs) as the job's entries."""
    default = None if config is None else str(config)
    if isinstance(model, (str, Path)):
        return (ModelEntry(str(model), default),)
    entries = tuple(m._replace(config=default if m.config is None else m.config) if isinstance(m, ModelEntry)
                    else ModelEntry(str(m[0]), default if m[1] is None else str(m[1])) if isinstance(m, (tuple, list))
                    else ModelEntry(str(m), default) for m in model or ())
    if not entries:
        raise PlanError("models.model", "no model given (a converted folder or Hub id)")
    return entries


def _convert(name: str, hint, value):
    if name == "data.preprocessing":
        try:
            return Preprocessing(value)
        except ValueError:
            raise PlanError(name, f"choose one of {', '.join(p.value for p in Preprocessing)}", value) from None
    if name == "report.loggers":
        return parse_loggers(value)
    if name == "run.num_workers" and value is None:
        return default_num_workers()
    if name == "data.source" and value is not None:
        return str(value)
    if value is not None and (hint is Path or Path in typing.get_args(hint)):
        return Path(value)
    return value
