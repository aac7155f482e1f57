"""The installed product: the wheel and sdist as built, installed non-editable into a fresh virtualenv and run
from a folder outside the checkout, alone and beside Hugging Face's `evaluate` library in both install orders (one
venv taken through both: ours, theirs on top, ours removed, ours again on top of theirs).

Why: every other test imports the checkout (an editable install). A wheel that lacks its variant files, or
that shares a file path with Hugging Face's `evaluate` wheel (both install into site-packages/evaluate/),
passes all of them and fails its users. Here the wheel is built from a clean copy of the tree (what git
tracks, plus untracked files git does not ignore), so a stale build/ folder cannot hide a missing file.

The venv does not install torch, transformers, Lightning, datasets ... again (that took minutes): it sees the
distributions our wheel requires, and only those, in a folder of links to this venv's copies (the
requirements of the built wheel, followed to the end); the checkout's editable install is not among them. A
dependency the wheel fails to declare is therefore still missing there. Hugging Face's wheel is installed with
pip's resolver, which takes what is already visible and fetches the rest.

Needs `build` and setuptools (in the `test` extra: the builds run without build isolation, which would make a
fresh build environment for each of the two builds) and PyPI for Hugging Face's `evaluate` (latest release).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cvt_port.variants import all_variants

ROOT = Path(__file__).resolve().parents[1]
HF_EVALUATE = "evaluate"  # Hugging Face's library on PyPI

# The bundled default and its verdict line.
GATE_PASS = "GATE: PASS"

# Run inside an installed venv, from a folder outside the checkout: what `import evaluate` gives first (Hugging
# Face's library, when installed), then where everything of ours was imported from and every variant as the
# installed wheel resolves it.
VARIANTS_PROBE = r"""
import dataclasses, json, sys
import evaluate
hf = {"file": evaluate.__file__, "version": evaluate.__version__} if callable(getattr(evaluate, "load", None)) else None
import importlib.util
import cvt_port, cvt_port.variants as v
where = [importlib.util.find_spec(m).origin for m in ("evaluate.cli", "evaluate.validation.lightning_module")]
def facts(x):
    d = dataclasses.asdict(x)
    d.pop("path")
    return d
tiny = v.load_variant_file(v.TESTING_CONFIGS_DIR / "tiny-imagenet.yaml")
print(json.dumps({
    "hf": hf,
    "files": [cvt_port.__file__, v.__file__, *where],  # found as an import finds them (the runs import them)
    "configs_dir": str(v.CONFIGS_DIR),
    "variants": {name: facts(x) for name, x in v.all_variants().items()},
    "by_release_file": {x.release_file: v.get_variant(x.release_file).name for x in v.release_variants().values()},
    "testing": facts(tiny),
}, default=list))
"""

HF_PROBE = r"""
import evaluate
assert callable(evaluate.load), evaluate
print(evaluate.__file__)
print(evaluate.__version__)
"""


# --------------------------------------------------------------------------- helpers


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at the checkout or another venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run(cmd, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def _check(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{' '.join(r.args)} -> {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


def _tracked_tree(dest: Path) -> Path:
    """A copy of the source tree as git sees it (tracked and untracked-but-not-ignored files, as they are now)."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, f"the installed-product tests build from a git checkout: {r.stderr.strip()}"
    for rel in filter(None, r.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is left out, as a build would
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _build(args: list, cwd: Path) -> None:
    """With this venv's setuptools (the `test` extra asks for what build-system.requires asks for)."""
    _check(_run([sys.executable, "-m", "build", "--no-isolation", *args], cwd=cwd))


def _members(wheel: Path) -> dict[str, str]:
    """path -> sha256 of every file in a wheel."""
    with zipfile.ZipFile(wheel) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if not n.endswith("/")}


def _payload(members: dict[str, str]) -> dict[str, str]:
    """A wheel's files less RECORD (which lists the others' hashes and so differs with nothing else)."""
    return {n: h for n, h in members.items() if not n.endswith(".dist-info/RECORD")}


def _requires(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    from email.parser import HeaderParser

    with zipfile.ZipFile(wheel) as z:
        meta = next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    return HeaderParser().parsestr(meta).get_all("Requires-Dist") or []


def _dependencies(wheel: Path, dest: Path) -> Path:
    """A folder of links to this venv's installed copies of every distribution the ``wheel`` requires (with
    the extras they ask for, followed to the end), and of nothing else: not the checkout's editable install,
    not the test extras."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def wanted(requirements, extras):
        for line in requirements:
            r = Requirement(line)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras | {""}):
                yield canonicalize_name(r.name), set(r.extras)

    todo = list(wanted(_requires(wheel), set()))
    done: dict[str, set] = {}
    dest.mkdir(parents=True)
    while todo:
        name, extras = todo.pop()
        if name in done and extras <= done[name]:
            continue
        done[name] = done.get(name, set()) | extras
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise AssertionError(f"{name}, required by the wheel, is not installed in the test venv") from None
        assert dist.files is not None, f"{name}: no RECORD, cannot tell its files"
        for top in {f.parts[0] for f in dist.files if f.parts[0] not in ("..", "__pycache__")}:
            assert not top.startswith(("cvt_port", "__editable__", "evaluate")), (name, top)
            link = dest / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)))
        todo += wanted(dist.requires or [], done[name])
    assert {"torch", "transformers", "lightning", "datasets"} <= set(done), sorted(done)
    return dest


@dataclass
class Venv:
    """A fresh virtualenv; commands run from ``work``, a folder outside the checkout."""

    path: Path
    work: Path

    @classmethod
    def create(cls, root: Path, deps: Path) -> "Venv":
        """A new venv that sees ``deps`` (see :func:`_dependencies`) after its own site-packages, through a
        ``.pth`` line: the dependencies are not installed again (minutes on 2 cores), and what we install goes
        into the venv's own site-packages, as it would for a user."""
        root.mkdir(parents=True, exist_ok=True)
        venv = cls(root / "venv", root / "work")
        venv.work.mkdir()
        _check(_run([sys.executable, "-m", "venv", venv.path], cwd=root))
        (venv.site_packages() / "_cvt_port_test_dependencies.pth").write_text(f"{deps}\n")
        return venv

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def pip(self, *args, deps: bool = False) -> None:
        """pip install without compiling every module at install time (the runs compile only what they import);
        without ``deps`` the distribution alone (ours: its dependencies are the ones :func:`_dependencies` made
        visible). With ``deps``, pip installs what is missing from the registry, as it would for a user."""
        _check(_run([self.bin("python"), "-m", "pip", "install", "-q", "--no-compile",
                     *([] if deps else ["--no-deps"]), *args], cwd=self.work))

    def run(self, *cmd, name: str) -> tuple[subprocess.CompletedProcess, Path]:
        """Run a command in its own empty folder under ``work``; return the result and the folder."""
        cwd = self.work / name
        cwd.mkdir()
        exe = self.bin(cmd[0]) if (self.path / "bin" / cmd[0]).exists() else cmd[0]
        return _run([exe, *cmd[1:]], cwd=cwd), cwd

    def site_packages(self) -> Path:
        return next((self.path / "lib").glob("python3*/site-packages"))


def _default_runs(venv: Venv, label: str, ways: tuple[str, ...]) -> dict:
    """The bundled default, as the module and/or the console script."""
    cmd = {"python -m evaluate": ("python", "-m", "evaluate"), "cvt-evaluate": ("cvt-evaluate",)}
    return {how: venv.run(*cmd[how], name=f"{label}-{how.split()[-1]}")[0] for how in ways}


def _convert(venv: Venv, checkpoint: Path, how: str, label: str) -> tuple[subprocess.CompletedProcess, Path]:
    cmd = ["cvt-port"] if how == "cvt-port" else ["python", "-m", "cvt_port"]
    r, cwd = venv.run(*cmd, "convert", checkpoint, "cvt-13-224", name=f"{label}-convert")
    return r, cwd / "cvt-13-224"


# --------------------------------------------------------------------------- fixtures (module scope: build once)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """Our wheel built from a clean copy of the tree, our sdist, the wheel built from that sdist, and
    Hugging Face's latest `evaluate` wheel."""
    root = tmp_path_factory.mktemp("dists")
    src = _tracked_tree(root / "src")
    _build(["--sdist", "--wheel", "--outdir", root / "tree", src], cwd=root)
    (sdist,) = (root / "tree").glob("cvt_port-*.tar.gz")
    (wheel,) = (root / "tree").glob("cvt_port-*.whl")
    with tarfile.open(sdist) as tf:
        tf.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    _build(["--wheel", "--outdir", root / "from-sdist", unpacked], cwd=root)
    (wheel_from_sdist,) = (root / "from-sdist").glob("cvt_port-*.whl")
    _check(_run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--dest",
                 root / "theirs", HF_EVALUATE], cwd=root))
    (theirs,) = (root / "theirs").glob("evaluate-*.whl")
    return {"wheel": wheel, "sdist": sdist, "wheel_from_sdist": wheel_from_sdist, "theirs": theirs}


@pytest.fixture(scope="module")
def release_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A random CvT-13 saved exactly as the release file (named like it, so the variant is inferred)."""
    from conftest import save_release_checkpoint

    path = tmp_path_factory.mktemp("release") / "CvT-13-224x224-IN-1k.pth"
    return path, save_release_checkpoint("cvt-13-224", path, seed=3)


@pytest.fixture(scope="module")
def installed(dists, release_checkpoint, tmp_path_factory):
    """One venv (torch and the dependencies installed once) taken through both install orders, checks run in
    each state: our wheel alone; Hugging Face's wheel on top (ours then theirs); ours uninstalled (theirs must
    still work, nothing of ours left); ours again, on top of theirs (theirs then ours). The default runs as
    `python -m evaluate` alone and beside theirs, and as `cvt-evaluate` once theirs was there first; alone, the
    console script answers --help (each default run costs a demo's time)."""
    root = tmp_path_factory.mktemp("installed")
    venv = Venv.create(root, _dependencies(dists["wheel"], root / "dependencies"))
    venv.pip(dists["wheel"])
    alone = {
        "pip show": _run([venv.bin("python"), "-m", "pip", "show", "-f", "cvt-port"], cwd=venv.work),
        "probe": venv.run("python", "-c", VARIANTS_PROBE, name="alone-variants")[0],
        "convert": _convert(venv, release_checkpoint[0], "cvt-port", "alone"),
        **_default_runs(venv, "alone", ("python -m evaluate",)),
        "cvt-evaluate --help": venv.run("cvt-evaluate", "--help", name="alone-script-help")[0],
    }
    venv.pip(dists["theirs"], deps=True)  # what of theirs ours does not need (requests ...) from the registry
    ours_then_theirs = {"probe": venv.run("python", "-c", VARIANTS_PROBE, name="ours-then-theirs-variants")[0],
                        **_default_runs(venv, "ours-then-theirs", ("python -m evaluate",))}
    _check(_run([venv.bin("python"), "-m", "pip", "uninstall", "-y", "-q", "cvt-port"], cwd=venv.work))
    ours_removed = {"hf": venv.run("python", "-c", HF_PROBE, name="ours-removed-hf")[0],
                    "evaluate/": sorted(p.relative_to(venv.site_packages() / "evaluate").as_posix()
                                        for p in (venv.site_packages() / "evaluate").rglob("*"))}
    venv.pip(dists["wheel"])
    theirs_then_ours = {"probe": venv.run("python", "-c", VARIANTS_PROBE, name="theirs-then-ours-variants")[0],
                        "convert": _convert(venv, release_checkpoint[0], "python -m cvt_port", "theirs-then-ours"),
                        **_default_runs(venv, "theirs-then-ours", ("cvt-evaluate",))}
    yield {"venv": venv, "alone": alone, "ours_then_theirs": ours_then_theirs, "ours_removed": ours_removed,
           "theirs_then_ours": theirs_then_ours}
    shutil.rmtree(venv.path, ignore_errors=True)


# --------------------------------------------------------------------------- the wheel and the sdist


def test_wheel_carries_every_config_the_bundled_default_and_the_data(dists):
    names = set(_members(dists["wheel"]))
    configs = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert configs, "no variant files in configs/"
    missing = [c for c in configs if f"cvt_port/configs/{c}" not in names]
    assert not missing, f"configs/ files missing from the wheel's cvt_port/configs/: {missing}"
    assert not any(n.startswith("configs/") for n in names), "configs/ must be carried inside cvt_port/, not top level"
    bundled = [p.relative_to(ROOT).as_posix() for p in (ROOT / "evaluate/bundled").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    assert [b for b in bundled if b not in names] == []
    assert sum(n.startswith("evaluate/bundled/digits/val/") for n in names) == 360
    for data in ("cvt_port/data/imagenet-1k-classes.tsv", "evaluate/data/imagenet-real-labels.json",
                 "evaluate/__main__.py", "cvt_port/__main__.py"):
        assert data in names, data
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/", "site/")) for n in names)  # site/: mkdocs output
    with zipfile.ZipFile(dists["wheel"]) as z:
        entry_points = next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "cvt-port = cvt_port.cli:main" in entry_points
    assert "cvt-evaluate = evaluate.cli:main" in entry_points


def test_sdist_carries_configs_and_builds_the_same_wheel(dists):
    with tarfile.open(dists["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for p in (ROOT / "configs").rglob("*.yaml"):
        assert p.relative_to(ROOT).as_posix() in names, f"sdist lacks {p.relative_to(ROOT)}"
    assert {"pyproject.toml", "README.md", "evaluate/bundled/cvt-tiny-digits.pth",
            "cvt_port/data/imagenet-1k-classes.tsv"} <= names
    assert "cvt_port/configs" not in {n.rsplit("/", 1)[0] for n in names}, "a second copy of configs/ in the sdist"
    from_tree, from_sdist = _payload(_members(dists["wheel"])), _payload(_members(dists["wheel_from_sdist"]))
    assert sorted(from_sdist) == sorted(from_tree)
    assert from_sdist == from_tree, [n for n in from_tree if from_tree[n] != from_sdist.get(n)]


def test_no_path_in_our_wheel_is_in_hugging_faces_evaluate_wheel(dists):
    ours, theirs = set(_members(dists["wheel"])), set(_members(dists["theirs"]))
    assert "evaluate/__init__.py" in theirs and "evaluate/module.py" in theirs  # the wheel we compare with is theirs
    assert "evaluate/__init__.py" not in ours, "our evaluate must stay a namespace portion (no __init__.py)"
    assert ours & theirs == set()
    # nor inside one of their sub-packages (evaluate/utils/, evaluate/commands/, ...): only evaluate/ is shared
    their_packages = {n.rsplit("/", 1)[0] + "/" for n in theirs if n.endswith("/__init__.py")} - {"evaluate/"}
    assert their_packages, theirs
    assert [n for n in ours if n.startswith(tuple(their_packages))] == []
    their_modules = {n[:-3] for n in theirs if n.startswith("evaluate/") and n.endswith(".py")}
    assert [n for n in ours if n.endswith(".py") and n[:-3] in their_modules] == []


# --------------------------------------------------------------------------- installed, alone and beside theirs


def _assert_default_passed(runs: dict, where: str) -> None:
    ways = [how for how in ("python -m evaluate", "cvt-evaluate") if how in runs]
    assert ways, runs
    for how in ways:
        r = runs[how]
        assert r.returncode == 0, f"{where}: {how} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert GATE_PASS in r.stdout, f"{where}: {how}\n{r.stdout[-2000:]}"
        assert "| converted | release |" in r.stdout


def _assert_imports_installed(probe: subprocess.CompletedProcess, venv: Venv) -> dict:
    assert probe.returncode == 0, probe.stderr[-3000:]
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    site = venv.site_packages().resolve()
    for f in facts["files"]:
        assert Path(f).resolve().is_relative_to(site), f"{f} imported from outside the installed wheel ({site})"
    assert Path(facts["configs_dir"]).resolve() == site / "cvt_port" / "configs"
    return facts


def _assert_hf_evaluate_imports(hf: dict | None, venv: Venv, version: str) -> None:
    """``hf``: what `import evaluate` gave first in a process (VARIANTS_PROBE's "hf", or HF_PROBE's lines)."""
    assert hf is not None, "import evaluate: no evaluate.load (not Hugging Face's library)"
    assert Path(hf["file"]).resolve() == venv.site_packages().resolve() / "evaluate" / "__init__.py"
    assert hf["version"] == version


def _hf_probe_facts(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, f"import evaluate; evaluate.load failed:\n{r.stderr[-3000:]}"
    file, version = r.stdout.split()
    return {"file": file, "version": version}


def _their_version(dists) -> str:
    return dists["theirs"].name.split("-")[1]


def _assert_converted(result: tuple[subprocess.CompletedProcess, Path], checkpoint) -> None:
    r, folder = result
    assert r.returncode == 0, f"convert exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "conversion.json"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_act"] == "quick_gelu" and len(config["id2label"]) == 1000
    facts = json.loads((folder / "conversion.json").read_text())
    assert facts["parity"]["max_abs_logit_diff"] <= 1e-5
    assert facts["source"]["sha256"] == hashlib.sha256(checkpoint[0].read_bytes()).hexdigest()
    # what the installed product wrote computes what the original computes
    from cvt_port import load_model

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (load_model(folder)(pixel_values=x).logits - checkpoint[1](x)).abs().max().item()
    assert diff <= 1e-5


def _assert_every_variant_resolves(facts: dict) -> None:
    expected = {name: v for name, v in all_variants().items()}
    assert sorted(facts["variants"]) == sorted(expected) == sorted(
        p.stem for p in (ROOT / "configs").glob("*.yaml"))
    for name, v in expected.items():
        assert facts["variants"][name]["architecture"]["depth"] == list(v.architecture.depth), name
        assert facts["variants"][name]["release_file"] == v.release_file, name
        assert facts["variants"][name]["reference"] == json.loads(json.dumps(v.reference)), name
    assert len(facts["by_release_file"]) == 7
    assert all(facts["by_release_file"][v.release_file] == n for n, v in expected.items() if v.release_file)
    assert facts["testing"]["name"] == "tiny-imagenet"


def test_wheel_alone_runs_from_outside_the_checkout(installed, release_checkpoint):
    venv, alone = installed["venv"], installed["alone"]
    show = alone["pip show"]
    assert show.returncode == 0 and "Editable project location" not in show.stdout, show.stdout
    assert not str(venv.site_packages()).startswith(str(ROOT))
    facts = _assert_imports_installed(alone["probe"], venv)
    _assert_every_variant_resolves(facts)
    _assert_default_passed(alone, "our wheel alone")  # the module; the console script's run: theirs then ours
    script = alone["cvt-evaluate --help"]
    assert script.returncode == 0 and "--models-file" in script.stdout, script.stderr[-2000:]
    assert facts["hf"] is None  # their library is not installed yet: `evaluate.load` is not ours
    _assert_converted(alone["convert"], release_checkpoint)


def test_default_report_folder_is_written_where_it_runs(installed):
    out = installed["venv"].work / "alone-evaluate" / "cvt-port-output"
    report = json.loads((out / "report.json").read_text())
    assert report["gate"] == "pass" and report["num_samples"] == 360
    assert (out / "cvt-tiny-digits-hf" / "model.safetensors").is_file()


def test_ours_then_hugging_faces_evaluate(installed, dists):
    venv, both = installed["venv"], installed["ours_then_theirs"]
    facts = _assert_imports_installed(both["probe"], venv)
    _assert_hf_evaluate_imports(facts["hf"], venv, _their_version(dists))
    _assert_default_passed(both, "our wheel, then Hugging Face's evaluate")
    _assert_every_variant_resolves(facts)


def test_removing_ours_leaves_hugging_faces_evaluate_whole(installed, dists):
    venv, removed = installed["venv"], installed["ours_removed"]
    _assert_hf_evaluate_imports(_hf_probe_facts(removed["hf"]), venv, _their_version(dists))
    ours = [n.removeprefix("evaluate/") for n in _members(dists["wheel"]) if n.startswith("evaluate/")]
    left = removed["evaluate/"]
    assert ours and "__init__.py" in left and "module.py" in left, left
    # nothing of ours left beside theirs: no file, no folder, no compiled module
    assert [n for n in left if n in ours or n.split("/")[0] in {o.split("/")[0] for o in ours if "/" in o}] == []
    our_modules = {o[:-3] for o in ours if "/" not in o and o.endswith(".py")}
    assert [n for n in left if n.startswith("__pycache__/") and n.split("/")[1].split(".")[0] in our_modules] == []


def test_hugging_faces_evaluate_then_ours(installed, dists, release_checkpoint):
    venv, both = installed["venv"], installed["theirs_then_ours"]
    facts = _assert_imports_installed(both["probe"], venv)
    _assert_hf_evaluate_imports(facts["hf"], venv, _their_version(dists))
    _assert_default_passed(both, "Hugging Face's evaluate, then our wheel")
    _assert_every_variant_resolves(facts)
    _assert_converted(both["convert"], release_checkpoint)
