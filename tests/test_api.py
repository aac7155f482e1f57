"""The Python API (``from evaluate.api import ...``): a typed plan, one call, a result object.

The figures come from the bundled digits model (trained: its predictions vary and are mostly right),
so a result that lost or reordered predictions cannot agree with its own figures.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from cvt_port.errors import BadInput, ExitStatus
from evaluate.api import (DataSpec, EvalPlan, ModelEntry, ModelSpec, PlanError, Preprocessing, ReportSpec, RunSpec, evaluate_model,
                          exit_status, run_plan)
from evaluate.default import CHECKPOINT, DATA, VARIANT
from evalkit import wnids
from imagegen import make_imagefolder

REPO = Path(__file__).resolve().parent.parent
CPU = dict(accelerator="cpu", num_workers=0, batch_size=64)


@pytest.fixture(scope="module")
def digits_result(digits, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = evaluate_model(model=digits, data=DATA, config=VARIANT, reference=CHECKPOINT, **CPU)
    return result, cwd


def test_evaluate_model_gives_figures_predictions_and_the_verdict(digits_result):
    result, cwd = digits_result
    assert result.verdict == "pass" and result.passed and result.exit_status is ExitStatus.PASS
    assert result.primary == "converted" and result.reference == "original"
    assert result.num_samples == len(result.predictions) == 360
    # the figures agree with the per-image predictions they came from
    preds = result.predictions
    top1 = 100 * sum(p.top1("converted") == p.label for p in preds) / len(preds)
    top5 = 100 * sum(p.label in p.top["converted"] for p in preds) / len(preds)
    assert result.top1 == pytest.approx(top1) and result.top5 == pytest.approx(top5)
    assert 90 <= result.top1 < 100  # trained, not perfect: the figures are not trivial
    assert len(Counter(p.top1("converted") for p in preds)) == 10  # predictions vary over the classes
    assert all(len(p.top["converted"]) == 5 for p in preds)
    assert [p.top1("original") for p in preds] == [p.top1("converted") for p in preds]
    assert result.model("original")["top1"] == pytest.approx(
        100 * sum(p.top1("original") == p.label for p in preds) / len(preds))
    assert {c["name"]: c["status"] for c in result.checks} == {
        "reference_top1": "pass", "agreement": "pass", "recorded_top1": "pass"}
    # no output asked for: nothing written, not even the default folder
    assert result.output is None and list(cwd.iterdir()) == []


def test_run_plan_writes_the_reports_the_cli_writes(digits, digits_result, tmp_path):
    plan = EvalPlan(
        models=ModelSpec(model=str(digits), config=VARIANT),
        data=DataSpec(source=str(DATA), subset=50, seed=1),
        run=RunSpec(**CPU),
        report=ReportSpec(output=tmp_path / "out", summary=False),
    )
    result = run_plan(plan)
    assert result.output == tmp_path / "out"
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(result.record))
    assert on_disk["subset"] == 50 and on_disk["seed"] == 1 and on_disk["preprocessing"] == "release"
    # the subset's predictions are the full run's for the same images
    full = {p.image_id: p.top["converted"] for p in digits_result[0].predictions}
    assert len(result.predictions) == 50
    assert all(full[p.image_id] == p.top["converted"] for p in result.predictions)


def test_not_made_is_its_own_verdict_and_exit_status(tiny, tmp_path):
    make_imagefolder(tmp_path / "val", wnids(3, step=40), per_class=2)
    result = evaluate_model(model=tiny["hf"], data=tmp_path / "val", config=tiny["yaml"], **CPU)
    assert result.verdict == "not made" and result.exit_status == 3 and not result.passed
    assert {c["status"] for c in result.checks} == {"not made"}
    assert [exit_status(v) for v in ("pass", "fail", "not made")] == [0, 1, 3]


def test_a_plan_is_checked_once_when_it_is_made():
    data = DataSpec(source="somewhere")
    with pytest.raises(PlanError) as e:
        EvalPlan(ModelSpec(), data)
    assert e.value.fields == ("models.model",)
    with pytest.raises(PlanError) as e:
        EvalPlan(ModelSpec(model="m"), DataSpec())
    assert e.value.fields == ("data.source",)
    for bad, field in [(dict(subset=0), "data.subset"), (dict(preprocessing="fancy"), "data.preprocessing")]:
        with pytest.raises(PlanError) as e:
            EvalPlan(ModelSpec(model="m"), dataclasses.replace(data, **bad))
        assert e.value.fields == (field,)
    for bad, field in [(dict(batch_size=0), "run.batch_size"), (dict(num_workers=-1), "run.num_workers"),
                       (dict(attention="flash"), "run.attention")]:
        with pytest.raises(PlanError) as e:
            EvalPlan(ModelSpec(model="m"), data, RunSpec(**bad))
        assert e.value.fields == (field,) and "--" not in str(e.value)
    plan = EvalPlan(ModelSpec(model="m"), dataclasses.replace(data, preprocessing=Preprocessing.BOTH))
    assert [m.value for m in plan.modes] == ["release", "hf"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.run.batch_size = 2  # type: ignore[misc]


@pytest.mark.parametrize("setting, field", [(dict(precision="bf16-true"), "run.precision"),
                                            (dict(precision="16-true"), "run.precision"),
                                            (dict(strategy="ddp_spawn"), "run.strategy")])
def test_settings_that_would_give_a_wrong_answer_are_refused_before_anything_loads(tmp_path, setting, field):
    with pytest.raises(PlanError) as e:
        # the model does not exist: the refusal comes first, before any file is read
        evaluate_model(model=tmp_path / "absent", data=tmp_path, **{**CPU, "num_workers": 0, **setting})
    assert e.value.fields == (field,) and "--" not in str(e.value)


def test_library_errors_speak_of_values_not_flags(digits, tmp_path):
    with pytest.raises(PlanError) as e:
        evaluate_model(model=digits, data=DATA, config=VARIANT, reference=tmp_path / "x.pth", **CPU)
    assert e.value.fields == ("models.reference",) and str(e.value) == f"models.reference {tmp_path / 'x.pth'}: no such file"
    with pytest.raises(BadInput):
        evaluate_model(model=digits, data=DATA, config=VARIANT, preprocessing="sharpest", **CPU)


def test_the_cli_shows_the_fields_an_error_names_as_its_flags():
    from evaluate.cli import flag
    from evaluate.plan import name_fields

    e = PlanError("data.source", "a flat folder needs a labels file: use data.labels_file", "/x/data.source")
    assert str(e) == "data.source /x/data.source: a flat folder needs a labels file: use data.labels_file"
    assert e.render(flag) == "--data /x/data.source: a flat folder needs a labels file: use --labels-file"
    # a hint in any one-line error; a path that looks like a field is left as it is
    assert name_fields("a.JPEG: cannot decode image; use data.skip_bad_images.", flag) == \
        "a.JPEG: cannot decode image; use --skip-bad-images."
    assert name_fields("report.output a/data.source.txt: no", flag) == "--output a/data.source.txt: no"


def test_no_library_error_spells_a_flag():
    """Errors raised outside the CLIs name plan fields, files, keys and values; the CLI maps fields to flags."""
    spelled = []
    for path in _sources():
        if str(path.relative_to(REPO)) in CLI_MODULES or path.parts[-2] != "evaluate":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) or (isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)):  # raises and message constants
                spelled += [f"{path.name}:{c.lineno}" for c in ast.walk(node) if isinstance(c, ast.Constant)
                            and isinstance(c.value, str) and re.search(r"(^|\s)--[a-z]", c.value)]
    assert spelled == []


# -- the layout the API sits in -------------------------------------------------------------------

CLI_MODULES = {"evaluate/cli.py", "cvt_port/cli.py", "evaluate/bundled/build.py"}


def _sources():
    return sorted(p for pkg in ("evaluate", "cvt_port") for p in (REPO / pkg).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Modules of our two packages that ``path`` imports, anywhere in it (lazy imports too)."""
    rel = path.relative_to(REPO).with_suffix("")
    package = list(rel.parts[:-1])  # an __init__ is its own folder's package too
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in ("evaluate", "cvt_port")}
    return out


def test_no_import_circles_no_argparse_outside_the_clis_no_long_files():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p for p in _sources()}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    # a package importing its own __init__ is not a circle worth the name; modules importing each other are
    circles = [c for m in graph if (c := cycle_from(m)) and not any(x in ("evaluate", "cvt_port") for x in c)]
    assert circles == []
    with_argparse = {str(p.relative_to(REPO)) for p in _sources() if "argparse" in {
        a.name for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Import) for a in n.names}}
    assert with_argparse <= CLI_MODULES
    long_files = {str(p.relative_to(REPO)): n for p in _sources() if (n := len(p.read_text().splitlines())) > 500}
    assert long_files == {}


def test_every_plan_field_is_a_keyword_of_evaluate_model_and_a_flag_of_the_cli():
    """Issue 20.4: the API and the CLI are made from the plan's fields; a field without a keyword or a flag (as
    label_numbering and devkit_map once were) fails here unless it is listed, with its reason, as none."""
    import inspect

    from evaluate import api, cli
    from evaluate.plan_values import input_names

    keywords = set(inspect.signature(evaluate_model).parameters)
    options = {o for a in cli.build_parser()._actions for o in a.option_strings}
    fields = input_names()
    assert {"data.label_numbering", "data.devkit_map", "models.reference", "models.models_file"} <= set(fields)
    for name in fields:
        assert name in api.NOT_KEYWORDS or api.KEYWORDS.get(name, name.split(".")[1]) in keywords, name
        assert name in cli.NOT_FLAGS or cli.FLAGS.get(name) in options, name
    assert len(keywords) == len(fields) - len(api.NOT_KEYWORDS)


def test_the_api_keywords_are_the_cli_flags_both_ways(monkeypatch):
    """Issue 25.3: docs/api.md says the keywords are the CLI's flags; models_file and verbose were refused by
    evaluate_model and summary had no flag. The full sets, from --help and from the signature, compared both ways."""
    import inspect

    from evaluate import cli

    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps no option line
    text = cli.build_parser().format_help()
    listed = {o[2:].replace("-", "_") for line in text.splitlines() if line.startswith("  -")
              for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line.split("  ")[1])}
    flags = {o for o in listed if o != "help" and not (o.startswith("no_") and o[3:] in listed)}
    parsed = {a.dest for a in cli.build_parser()._actions if a.dest != "help"}
    keywords = set(inspect.signature(evaluate_model).parameters)
    assert flags == parsed
    assert flags - keywords == set(), "flags evaluate_model does not take"
    assert keywords - flags == set(), "keywords the CLI has no flag for"
    assert {"models_file", "verbose", "summary"} <= keywords


def test_models_file_and_summary_and_verbose_reach_the_plan_from_both(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("evaluate.api.run_plan", lambda plan: seen.append(plan))
    listed = tmp_path / "models.txt"
    listed.write_text("b\nc cfg-c\n")
    evaluate_model(model="a", config="cfg", data="d", models_file=listed, summary=True, verbose=True)
    from evaluate.cli import build_parser, plan_parts

    args = build_parser().parse_args(["--model", "a", "--config", "cfg", "--data", "d", "--models-file", str(listed),
                                      "--no-summary", "--verbose"])
    from evaluate.plan import EvalPlan

    seen.append(EvalPlan(*plan_parts(args)))
    api_plan, cli_plan = seen
    assert api_plan.models.entries == cli_plan.models.entries == (
        ModelEntry("a", "cfg"), ModelEntry("b", "cfg"), ModelEntry("c", "cfg-c"))
    assert (api_plan.report.summary, cli_plan.report.summary) == (True, False)
    assert api_plan.report.verbose and cli_plan.report.verbose
    assert not EvalPlan(*plan_parts(build_parser().parse_args(["--model", "a", "--data", "d"]))).report.verbose
    with pytest.raises(PlanError, match="models.models_file .*line 1 has 3 words"):
        listed.write_text("a b c\n")
        evaluate_model(model="a", data="d", models_file=listed)


def test_lightning_banners_tips_and_warnings_stay_off_stderr_through_the_api(digits, capfd):
    """Issue 25.3: through the API, Lightning printed "GPU available", "TPU available", a tip and warnings (srun,
    LeafSpec) on stderr; the CLI did not. Now the API is as quiet (and verbose=True lets them through). Lightning's
    handler writes to the stderr of the moment it was imported (an earlier test's capture, in a whole-file run), so
    its records are collected from its logger as well as from the file descriptor."""
    import logging
    import warnings

    import lightning  # noqa: F401  (it sets its loggers' levels when imported: the caller's levels are these)

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    names = ("lightning.pytorch", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in names}
    records: list[str] = []
    handler = Collect(logging.DEBUG)
    for n in names:
        logging.getLogger(n).addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet = evaluate_model(model=digits, data=DATA, config=VARIANT, subset=20, **CPU)
        err = capfd.readouterr().err
        assert quiet.num_samples == 20
        noise = ("GPU available", "TPU available", "Tip", "srun", "LeafSpec", "Warning")
        assert [n for n in noise if n in err or any(n in r for r in records)] == [], (err, records)
        assert [str(w.message)[:80] for w in caught if "lightning" in w.filename or "srun" in str(w.message)] == []
        # nothing changed for the caller's process after the call
        assert {n: logging.getLogger(n).level for n in levels} == levels
        evaluate_model(model=digits, data=DATA, config=VARIANT, subset=20, verbose=True, **CPU)
        assert any("GPU available" in r for r in records)
    finally:
        for n in names:
            logging.getLogger(n).removeHandler(handler)


def test_label_numbering_and_devkit_map_reach_the_plan_from_the_api(tmp_path, monkeypatch):
    """They were missing from evaluate_model: the keywords now reach the plan's data part."""
    seen = {}
    monkeypatch.setattr("evaluate.api.run_plan", lambda plan: seen.setdefault("plan", plan))
    evaluate_model(model="m", data="d", label_numbering="devkit", devkit_map=str(tmp_path / "map.txt"), subset=3)
    data = seen["plan"].data
    assert (data.label_numbering, data.devkit_map, data.subset) == ("devkit", tmp_path / "map.txt", 3)
    assert seen["plan"].report.command == (f"evaluate_model(model='m', data='d', label_numbering='devkit', "
                                          f"devkit_map='{tmp_path / 'map.txt'}', subset=3)")
