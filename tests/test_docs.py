"""The docs hold to the code and to each other.

Why: a README that grows back past a page, a first command that no longer sets up a fresh machine, a CI that runs
something other than what the README says, and an architecture page that forgets a module (the old README's
hand-written layout list missed seven) all pass every other test. The site itself is built in strict mode by
.ci/run (a broken link, a page left out of the nav, a stale API reference fail there); these checks need no mkdocs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from cvt_port.cli import build_parser as convert_parser
from evaluate.cli import build_parser as evaluate_parser, plan_parts

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PACKAGES = ("cvt_port", "evaluate")
SETUP = ["python3 -m venv .venv", ". .venv/bin/activate", "pip install torch==2.13.0"]


def fenced(text: str, lang: str = "bash") -> list[str]:
    """The bodies of the fenced blocks of one language ("" for none), in order; an opening fence names its
    language, a closing one is bare."""
    blocks, body, opened = [], None, None
    for line in text.splitlines(keepends=True):
        if line.startswith("```") and body is None:
            body, opened = [], line[3:].strip()
        elif line.startswith("```"):
            if opened == lang:
                blocks.append("".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def steps(command: str) -> list[str]:
    return [s.strip() for s in command.strip().split("&&")]


def ci_steps() -> list[str]:
    """.ci/run's commands from the venv on, as a user types them (``python -m pip install -q`` is ``pip install``).
    The system browser CI installs for the report's browser test (as root, :func:`test_ci_installs_the_browser`) is
    the CI machine's setup, not a step of the README's command."""
    lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    run = [ln for ln in lines if ln and not ln.startswith(("#", "set ", "cd ")) and "apt-get" not in ln]
    return [re.sub(r"^python -m pip install -q ", "pip install ", ln) for ln in run]


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    first, second = fenced(text)[:2]
    assert text.index("```bash") < text.index("\n## "), "the two commands come before any section"
    assert steps(first) == SETUP + ["pip install -e .", "python -m evaluate"]
    assert steps(second)[:3] == SETUP and steps(second)[-1] == "python -m pytest -q"
    assert steps(second) == ci_steps(), "the README's second command is what .ci/run runs"


def test_the_docs_extra_is_what_ci_installs():
    docs = re.search(r"^docs = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert docs, "pyproject.toml has no docs extra"
    assert {re.split(r"[\[<>=]", r.strip(' "'))[0] for r in docs.group(1).split(",")} == {"mkdocs", "mkdocstrings"}
    assert any(s.startswith("pip install -e") and "docs" in s for s in ci_steps())
    assert "mkdocs build --strict" in ci_steps()


def test_ci_installs_the_browser():
    """tests/test_report_html.py's browser test needs Chromium (it fails without it): CI installs it, before the tests."""
    text = (ROOT / ".ci/run").read_text()
    line = next(ln for ln in text.splitlines() if "apt-get install" in ln)
    assert "chromium" in line and "/usr/bin/chromium" in line and text.index(line) < text.index("python -m pytest")


def test_ci_installs_slurm_and_munge_for_the_real_cluster():
    """tests/test_slurm_cluster.py needs slurmctld, slurmd and munged (it fails naming them without): CI installs them
    where missing, before the tests, as the browser."""
    text = (ROOT / ".ci/run").read_text()
    line = next(ln for ln in text.splitlines() if "apt-get install" in ln and "slurm" in ln)
    assert "slurm-wlm munge" in line and "command -v slurmctld" in line and text.index(line) < text.index("python -m pytest")


def test_readme_examples_parse():
    text = README.read_text(encoding="utf-8")
    commands = [shlex.split(line) for block in fenced(text)[2:]
                for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    evaluates = [c for c in commands if c[:3] == ["python", "-m", "evaluate"]]
    converts = [c for c in commands if c[:4] == ["python", "-m", "cvt_port", "convert"]]
    assert evaluates and converts
    for argv in evaluates:
        args = evaluate_parser().parse_args(_drop_comment(argv[3:]))
        plan_parts(args)
    for argv in converts:
        convert_parser().parse_args(_drop_comment(argv[3:]))


def _drop_comment(argv: list[str]) -> list[str]:
    return argv[:argv.index("#")] if "#" in argv else argv


def test_the_demo_output_is_the_same_in_the_readme_and_the_overview():
    demo = [b for b in fenced(README.read_text(encoding="utf-8"), "") if b.startswith("$ python -m evaluate\n")]
    page = [b for b in fenced((DOCS / "index.md").read_text(encoding="utf-8"), "")
            if b.startswith("$ python -m evaluate\n")]
    assert len(demo) == 1 and demo == page
    assert "GATE: PASS" in demo[0] and "| converted | release | 99.72 |" in demo[0]


def test_the_nav_lists_every_page():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = sorted(page for entry in nav for page in entry.values())
    assert listed == sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def test_the_architecture_page_names_every_module_and_no_module_that_is_gone():
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `((?:%s)/[\w/]*\.py)` \|" % "|".join(PACKAGES), page, re.M))
    modules = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sorted(modules - named) == [], "modules missing from docs/architecture.md"
    assert sorted(named - modules) == [], "docs/architecture.md names modules that do not exist"


def test_the_readme_links_lead_to_pages():
    """The site's strict build checks the pages' links; the README is not one of its pages."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    assert links
    assert [link for link in links if not link.startswith("http") and not (ROOT / link).is_file()] == []
