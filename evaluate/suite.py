"""A suite file: several test sets gated as one job (``data.suite``, ``--suite FILE``).

Users gate a model on more than one data set (ImageNet val, V2, ReaL, a corrupted copy, ...): each set has its own
source, subset, labels and its own gate (the top-1 recorded on it, its tolerances). The file says so once::

    suite: imagenet-family          # optional; default: the file's name
    sets:
      - name: val                   # letters, digits, - and _: the set's reports go to OUTPUT/<name>/
        data: /data/imagenet/val    # a folder, file or Hub id, as --data (relative: to this file's folder)
        subset: 5000
      - name: v2
        data: /data/imagenet-v2
        recorded_top1: 71.2         # the top-1 recorded on this data (null: none); default: the variant's
        gate: {detectable_drop: 2.0}

A set takes the data flags by their plan names (:data:`SET_KEYS`: ``labels_file``, ``split``, ``seed``,
``label_numbering``, ...), typed from :class:`~evaluate.plan.DataSpec` itself, so a data field added there is a
set key without a copy; ``preprocessing`` is the job's, for every set. The file is read whole, typed and
range-checked before any model is loaded or any data read (:func:`read_suite`): an unknown key, a wrong type, a
missing path, two sets of one name or no set at all is one :class:`~cvt_port.errors.BadInput` line naming the file,
the set and the key (exit 2). Each set is then a :class:`~evaluate.plan.DataSpec` of the shared path
(:func:`set_plans`): :func:`evaluate.run.run_plan` runs the sets in turn, one record each.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import NamedTuple

from cvt_port.errors import BadInput
from cvt_port.variants import read_gate_section, read_yaml_mapping

from .plan import SUITE_WIDE_DATA, DataSpec, EvalPlan, PlanError

# set key -> DataSpec field; "data" is the source, as the flag says it
_FIELD_OF = {"data": "source", **{f: f for f in DataSpec.__dataclass_fields__
                                  if f not in (*SUITE_WIDE_DATA, "source", "gate")}}
GATE_OF_SET = ("recorded_top1", "recorded_images")  # the set's own recorded figure, beside its gate: section
SET_KEYS = ("name", *_FIELD_OF, *GATE_OF_SET, "gate")
TOP_KEYS = ("suite", "sets")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_GLOB_CHARS = "*?[{"


class SuiteSet(NamedTuple):
    """One test set: its name (its reports' folder) and its data, with its own gate (``DataSpec.gate``)."""

    name: str
    data: DataSpec


class Suite(NamedTuple):
    name: str
    path: Path
    sets: tuple[SuiteSet, ...]


def read_suite(path: str | Path) -> Suite:
    """The suite file, every key typed and range-checked, every path found (relative paths: to the file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: suite file not found (data.suite)")
    doc = read_yaml_mapping(path, TOP_KEYS, "a suite file")
    name = doc.get("suite", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise BadInput(f"{path}: key 'suite' = {name!r}: must be a non-empty name")
    sets = doc.get("sets")
    if not isinstance(sets, list) or not sets:
        raise BadInput(f"{path}: key 'sets' = {sets!r}: must be a non-empty list of test sets "
                       "(each a mapping with at least 'name' and 'data')")
    read, seen = [], {}
    for i, entry in enumerate(sets):
        one = _read_set(path, i, entry)
        if one.name.lower() in seen:  # case-insensitive: the names are folders
            raise BadInput(f"{path}: sets[{i}] key 'name' = {one.name!r}: set {seen[one.name.lower()]} has this "
                           "name already; give each set its own name")
        seen[one.name.lower()] = i
        read.append(one)
    return Suite(name.strip(), path, tuple(read))


def _read_set(path: Path, i: int, entry) -> SuiteSet:
    if not isinstance(entry, dict):
        raise BadInput(f"{path}: sets[{i}] = {entry!r}: must be a mapping of {', '.join(SET_KEYS)}")
    where = f"{path}: sets[{i}]"
    unknown = sorted(str(k) for k in entry if k not in SET_KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown key '{unknown[0]}'; allowed: {', '.join(SET_KEYS)}")
    for key in ("name", "data"):
        if entry.get(key) is None:
            raise BadInput(f"{where}: key '{key}' is missing")
    name = entry["name"]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise BadInput(f"{where}: key 'name' = {name!r}: must be 1 to 64 letters, digits, '-' or '_' (a folder name)")
    where = f"{path}: set '{name}'"
    hints = typing.get_type_hints(DataSpec)
    values = {field: _typed(where, key, hints[field], entry[key], path.parent)
              for key, field in _FIELD_OF.items() if key in entry}
    values["gate"] = _set_gate(where, entry)
    try:
        return SuiteSet(name, DataSpec(**values))
    except (TypeError, ValueError) as exc:  # a DataSpec that refuses a value itself
        raise BadInput(f"{where}: {exc}") from None


def _typed(where: str, key: str, hint, value, base: Path):
    """A set's value as its DataSpec field's type; ``None`` keeps the field's default."""
    def fail(allowed: str):
        raise BadInput(f"{where}: key '{key}' = {value!r}: must be {allowed}")

    options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = options[0]
    if value is None:
        if type(None) not in typing.get_args(hint):
            fail(f"a value ({_what(kind)})")
        return None
    if key == "data":
        return _source(where, value, base)
    if kind is bool:
        return value if isinstance(value, bool) else fail("true or false")
    if kind is int:
        lowest = 1 if key == "subset" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            fail(f"an integer >= {lowest}")
        return value
    if kind is Path:
        if not isinstance(value, str) or not value.strip():
            fail("a path")
        found = (base / Path(value).expanduser())
        return found if found.exists() else fail(f"an existing file (relative to {base}); not found")
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        return value if value in choices else fail(f"one of {', '.join(map(str, choices))}")
    if kind is str:
        return value if isinstance(value, str) and value.strip() else fail("a non-empty string")
    fail(_what(kind))  # a DataSpec field of a type no suite key handles yet: refused, not guessed


def _what(kind) -> str:
    return getattr(kind, "__name__", str(kind))


def _source(where: str, value, base: Path) -> str:
    """``data``: a local folder or file (or a shard pattern in an existing folder), else a Hub id ``OWNER/NAME``
    whose owner is no local folder; a local path that is not there is refused now, not after a model is loaded."""
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{where}: key 'data' = {value!r}: must be a folder, file or Hub dataset id")
    local = base / Path(value).expanduser()
    if any(c in local.name for c in _GLOB_CHARS):
        if local.parent.is_dir():
            return str(local)
    elif local.exists():
        return str(local)
    parts = value.split("/")
    if len(parts) == 2 and all(parts) and not value.startswith((".", "~")) and not (base / parts[0]).exists():
        return value  # a Hub dataset id
    raise BadInput(f"{where}: key 'data' = {value!r}: no such folder or file ({local}); give a local data set or a "
                   "Hub dataset id OWNER/NAME")


def _set_gate(where: str, entry: dict) -> tuple[tuple[str, float | None], ...]:
    """The set's own gate (``DataSpec.gate``): its recorded figure and its ``gate:`` settings over the variant's."""
    given: dict = {}
    if "recorded_top1" in entry:
        top1 = entry["recorded_top1"]
        if top1 is not None and (not isinstance(top1, (int, float)) or isinstance(top1, bool)
                                 or not math.isfinite(top1) or not 0 <= top1 <= 100):
            raise BadInput(f"{where}: key 'recorded_top1' = {top1!r}: must be a top-1 in % from 0 to 100, or null "
                           "(no figure recorded on this data)")
        given["recorded_top1"] = None if top1 is None else float(top1)
        given["recorded_in"] = where  # where the figure (or its null) came from: the check names it
    if entry.get("recorded_images") is not None:
        n = entry["recorded_images"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BadInput(f"{where}: key 'recorded_images' = {n!r}: must be an integer >= 1 (the images the "
                           "recorded top-1 was measured on)")
        if given.get("recorded_top1") is None:
            raise BadInput(f"{where}: key 'recorded_images' needs the set's recorded_top1")
        given["recorded_images"] = n
    if entry.get("gate") is not None:
        given.update(read_gate_section(where, {"gate": entry["gate"]}))
    return tuple(sorted(given.items()))


def set_plans(plan: EvalPlan, suite: Suite) -> list[tuple[str, EvalPlan]]:
    """Each set's plan: the job's plan with the set's data (the job's preprocessing), its reports under
    ``output/<name>`` and no summary of its own; each is checked as it is made, before anything is loaded."""
    out = plan.report.output
    plans = []
    for one in suite.sets:
        data = dataclasses.replace(one.data, preprocessing=plan.data.preprocessing)
        report = dataclasses.replace(plan.report, output=None if out is None else Path(out) / one.name, summary=False)
        try:
            plans.append((one.name, dataclasses.replace(plan, data=data, report=report)))
        except PlanError as exc:  # a combination the plan refuses (data.revision without data.streaming, ...)
            shown = exc.render(lambda f: "data" if f == "data.source" else f.split(".", 1)[1] if
                               f.startswith("data.") else f)
            raise BadInput(f"{suite.path}: set '{one.name}': {shown}") from None
    return plans
