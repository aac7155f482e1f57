"""The package layout shows the design (issue 20.3): evaluate's subpackages follow the data flow, each layer
imports only from the layers below it, no module imports another's private names, the imports form no
circle, no file is over 400 lines, and no path of ours is also a path of Hugging Face's ``evaluate`` wheel.

Read from the source with ``ast`` (every import, also those inside functions), so the test needs nothing
installed and fails on the commit that breaks a rule, naming the module and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cvt_port", "evaluate")

# evaluate's layers, lowest first: a module may import from its own layer and the layers below. The order is
# the data flow: flags -> plan -> (the process environment) -> models (folder, variant) -> sources (images,
# labels) -> pixels -> Lightning validate -> verdict -> reports; the orchestration on top walks them.
LAYERS = (
    ("plan", {"evaluate.plan", "evaluate.plan_values", "evaluate.result", "evaluate.suite"}),
    ("runtime", {"evaluate.runtime"}),
    ("models", {"evaluate.models"}),
    ("sources", {"evaluate.sources"}),
    ("pixels", {"evaluate.pixels"}),
    ("validation", {"evaluate.validation"}),
    ("verdict", {"evaluate.verdict"}),
    ("reports", {"evaluate.reports"}),
    ("orchestration", {"evaluate.run", "evaluate.job", "evaluate.job_reports", "evaluate.suite_reports", "evaluate.api",
                       "evaluate.cli",
                       "evaluate.default", "evaluate.__main__", "evaluate.bundled"}),
)
SUBPACKAGES = {"runtime", "models", "sources", "pixels", "validation", "verdict", "reports"}
# the paths Hugging Face's evaluate wheel has at its top (evaluate 0.4): none of them may be ours
HF_EVALUATE_PATHS = ("__init__.py", "module.py", "config.py", "hub.py", "info.py", "inspect.py", "loading.py",
                     "naming.py", "saving.py", "visualization.py", "utils", "evaluator", "commands",
                     "evaluation_suite")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import of ``name``'s source, absolute or relative."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # `from . import x` / `from .pkg import mod`: a module imported by name is an import of that module
            for n in names:
                if f"{target}.{n}" in MODULES:
                    out.append((f"{target}.{n}", [], node.lineno))
            out.append((target, [n for n in names if f"{target}.{n}" not in MODULES], node.lineno))
    return [(t, n, line) for t, n, line in out if t.split(".")[0] in PACKAGES]


def _layer(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return i
    raise AssertionError(f"{module}: in no layer of tests/test_layout.py; place it in one")


def _resolve(target: str) -> str | None:
    """The module an import refers to (the longest known module prefix)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def test_every_module_of_evaluate_has_a_layer_and_the_subpackages_are_the_designs():
    for name in MODULES:
        if name.startswith("evaluate.") and name != "evaluate":
            _layer(name)
    found = {p.name for p in (ROOT / "evaluate").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found - {"bundled"} == SUBPACKAGES


def test_no_layer_imports_a_higher_one():
    wrong = []
    for name, path in MODULES.items():
        if not name.startswith("evaluate.") or name.startswith("evaluate.bundled"):
            continue
        for target, _, line in _imports(name, path):
            target = _resolve(target)
            if target and target.startswith("evaluate.") and _layer(target) > _layer(name):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} "
                             f"({LAYERS[_layer(name)][0]} -> {LAYERS[_layer(target)][0]})")
    assert wrong == []


def test_no_private_name_is_imported_across_modules():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {n} from {target}"
             for name, path in MODULES.items() for target, names, line in _imports(name, path)
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert wrong == []


def test_the_imports_form_no_circle():
    graph = {name: {_resolve(t) for t, _, _ in _imports(name, path)} - {None, name} for name, path in MODULES.items()}
    # a package's __init__ is imported with any of its modules: not an edge of its own
    graph = {n: {t for t in ts if t not in PACKAGES} for n, ts in graph.items()}
    state: dict[str, int] = {}
    circle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if nxt not in state and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if node not in state and visit(node, []):
            break
    assert circle == [], " -> ".join(circle)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_is_over_400_lines(package):
    long = {str(p.relative_to(ROOT)): n for name, p in MODULES.items() if name.split(".")[0] == package
            for n in [len(p.read_text(encoding="utf-8").splitlines())] if n > MAX_LINES}
    assert long == {}


def test_no_path_of_ours_is_a_path_of_hugging_faces_evaluate():
    ours = {p.name for p in (ROOT / "evaluate").iterdir()}
    assert sorted(ours & set(HF_EVALUATE_PATHS)) == []


def test_the_rules_catch_what_they_forbid(tmp_path):
    """The checks above see a higher layer, a private name and a circle when there is one."""
    assert _layer("evaluate.reports.report") > _layer("evaluate.verdict.gate") > _layer("evaluate.sources.layouts")
    fake = tmp_path / "m.py"
    fake.write_text("from ..reports.report import _private\nfrom . import layouts\n")
    got = _imports("evaluate.sources.m", fake)
    assert ("evaluate.reports.report", ["_private"], 1) in got and ("evaluate.sources.layouts", [], 2) in got
