"""Models and data the evaluation tests make for themselves: a tiny 1000-class CvT in the release
format, converted with cvt_port, and ImageNet-style folders of real JPEG files.

A random tiny CvT predicts the same class for every image, so a test on it cannot tell a right
figure from a wrong one. The tiny model here sees colour: its head is fitted (least squares on the
model's own features) so that an image of :data:`PALETTE` colour ``i`` is predicted as class
``CLASSES[i]``. :func:`make_half_right_imagefolder` then files images under wnid folders so that
about half of them carry their colour's class (right) and the rest another colour (wrong), under
ILSVRC2012 numbers chosen so that ImageNet-ReaL judges some of the wrong ones right and leaves
some out: top-1, top-5, ReaL, per-class and agreement figures are all non-trivial.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cvt_port
from cvt_port.labels import imagenet_wnids
from cvt_port.reference import OriginalCvT
from cvt_port.variants import TESTING_CONFIGS_DIR, load_variant_file
from benchmarks.synthetic.checkpoints import random_reference, save_state

CLASSES = [100 * i for i in range(10)]  # ImageNet class indices the colours stand for
PALETTE = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 220, 40), (200, 40, 200), (40, 210, 210),
           (250, 140, 20), (120, 60, 20), (240, 240, 240), (30, 30, 30)]
SIZES = [(64, 48), (47, 81), (90, 90), (120, 67), (55, 100), (73, 52)]
RIGHT_PER_CLASS = [5, 3, 7, 4, 6, 2, 8, 5, 4, 6]  # images of each folder in their own colour (of 10)


def colour_image(colour, size=(64, 48), seed: int = 0) -> Image.Image:
    """A flat colour with a soft wave and noise (seeded): its class is its colour."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.array(colour, float)[None, None, :] + 25 * np.sin((xx + yy) / 7.0 + seed)[..., None]
    a = a + rng.normal(0, 20, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _fit_colour_head(model: OriginalCvT, variant) -> None:
    """Least squares on the model's features of 12 images per colour: head rows of CLASSES read colour;
    every other class keeps its random row, 3 logits lower (logits of a few units: float32 noise stays
    far below 1e-5)."""
    from evaluate.pixels.preprocess import ReleaseTransform

    tr = ReleaseTransform(variant.preprocessing)
    imgs, y = [], []
    for c, colour in enumerate(PALETTE):
        for k in range(12):
            imgs.append(colour_image(colour, SIZES[k % len(SIZES)], seed=1000 + 10 * c + k))
            y.append(c)
    with torch.no_grad():
        f = model.forward_features(tr.normalization(torch.stack([tr(i) for i in imgs]))).double()
        mu, sd = f.mean(0), f.std(0)
        x = torch.cat([(f - mu) / sd, torch.ones(len(f), 1, dtype=torch.float64)], 1)
        t = 1.5 * torch.nn.functional.one_hot(torch.tensor(y), len(PALETTE)).double()
        w = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(x.shape[1], dtype=torch.float64), x.T @ t)
        model.head.bias.sub_(3)
        model.head.weight[CLASSES] = (w[:-1] / sd[:, None]).T.float()
        model.head.bias[CLASSES] = (w[-1] - (mu / sd) @ w[:-1]).float()


def tiny_img_size() -> int:
    """The input size of the tests' tiny CvT (``configs/testing/tiny-imagenet.yaml``)."""
    return load_variant_file(TESTING_CONFIGS_DIR / "tiny-imagenet.yaml").preprocessing.img_size


def make_tiny_model(root: Path, seed: int = 0) -> dict:
    """{yaml, pth, hf, reference}: a tiny CvT that classifies by colour, saved like a release file and
    converted with cvt_port."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = TESTING_CONFIGS_DIR / "tiny-imagenet.yaml"
    variant = load_variant_file(cfg)
    model = random_reference(variant, seed, image_dependent=True)  # the image, not the biases, decides the features
    _fit_colour_head(model, variant)
    pth = save_state(model, root / "tiny.pth")
    hf = cvt_port.convert(pth, root / "hf", variant=cfg, log=lambda m: None)
    return {"yaml": cfg, "pth": pth, "hf": hf, "reference": model}


def make_half_right_imagefolder(root: Path) -> dict[str, int]:
    """101 JPEGs ``root/<wnid of CLASSES[i]>/ILSVRC2012_val_<n>.JPEG`` (11 in the first folder, 10 in
    the others). Image j of folder i has its folder's colour when j < RIGHT_PER_CLASS[i] (the model
    is right), another colour otherwise (wrong). Numbers: a right image gets one whose ReaL labels
    are exactly its class; a wrong one in turn one whose ReaL label is its *colour's* class (ReaL
    counts it right), one without ReaL labels (left out of ReaL) or one of its folder's class (wrong
    for ReaL too). Returns image id -> the
    class its colour stands for."""
    from evaluate.sources.real_labels import load_real_labels

    pools: dict = {c: [] for c in CLASSES}
    unlabelled = []
    for n, labels in enumerate(load_real_labels(), start=1):
        if len(labels) == 1 and labels[0] in pools:
            pools[labels[0]].append(n)
        elif not labels:
            unlabelled.append(n)
    wn = imagenet_wnids()
    colour_class = {}
    for i, c in enumerate(CLASSES):
        for j in range(11 if i == 0 else 10):
            k = i if j < RIGHT_PER_CLASS[i] else (i + 1 + j % 9) % 10
            if k == i or j % 3 == 2:  # ReaL agrees with the folder
                n = pools[c].pop(0)
            elif j % 3 == 1:
                n = unlabelled.pop(0)
            else:  # ReaL names the colour's class: the folder label is the mistake
                n = pools[CLASSES[k]].pop()
            path = Path(root) / wn[c] / f"ILSVRC2012_val_{n:08d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            colour_image(PALETTE[k], SIZES[(i + j) % len(SIZES)], seed=5000 + 10 * i + j).save(path, quality=90)
            colour_class[f"{wn[c]}/{path.name}"] = CLASSES[k]  # keyed like report image ids
    return colour_class


@dataclass
class Ran:
    """What a command line gave: its exit status and what it wrote (the fields of a CompletedProcess)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


FRESH_WARNING_FILTERS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                         ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                         ("ignore", ResourceWarning, "")]  # a new interpreter's (python -W not given)


@contextlib.contextmanager
def _as_a_new_process(cwd, env, out: io.StringIO, err: io.StringIO):
    """Working folder, environment, stdout/stderr, warning filters and display, and the stream of every
    logging handler that writes to the terminal, as a new process would have them; all restored after."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    terminal = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    handlers = [h for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
                for h in getattr(logger, "handlers", ()) if type(h) is logging.StreamHandler
                and id(h.stream) in terminal]
    streams = [(h, h.stream) for h in handlers]
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update({k: str(v) for k, v in env.items()})
        if cwd is not None:
            os.chdir(cwd)
        for h in handlers:
            h.setStream(err)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in FRESH_WARNING_FILTERS:
                warnings.filterwarnings(action, category=category, module=module, append=True)
            # shown on (this run's) stderr, as a new process shows them, not recorded by pytest
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            yield
    finally:
        for h, stream in streams:
            h.setStream(stream)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run_main(main, argv, cwd=None, env=None) -> Ran:
    """``main(argv)`` of a command line, in this process, as its ``__main__`` runs it: its return value or
    SystemExit (argparse's usage errors, --help) is the exit status. Seconds cheaper than a new process
    (imports of torch, transformers and Lightning); use a real process only where a process is the point
    (launchers, signals, a fresh interpreter's screen, the installed wheel)."""
    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    with _as_a_new_process(cwd, env, out, err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
    return Ran(argv, 0 if code is None else int(code), out.getvalue(), err.getvalue())


def evaluate_cli(*args, cwd=None, env=None) -> Ran:
    """``python -m evaluate ARGS``, in this process (see :func:`run_main`). Not for several devices: Lightning's
    DDP launcher would start the other processes from this one's command line (pytest's)."""
    from evaluate.cli import main

    argv = [str(a) for a in args]
    devices = argv[argv.index("--devices") + 1] if "--devices" in argv[:-1] else "1"
    if devices not in ("1", "auto") or any("ddp" in a for a in argv):
        raise ValueError(f"{argv}: several processes: run them with evaluate_process")
    return run_main(main, argv, cwd=cwd, env=env)


def evaluate_process(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``python -m evaluate ARGS`` in a new process: for tests whose point is a process (its screen, its
    launcher, its environment read at import)."""
    return subprocess.run([sys.executable, "-m", "evaluate", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def wnids(n: int, step: int = 1) -> list[str]:
    return imagenet_wnids()[: n * step : step]


def swap_head_classes(folder: Path, out: Path, a: int, b: int) -> Path:
    """A copy of a converted model ``folder`` at ``out`` with classes ``a`` and ``b`` exchanged in its classifier
    (weight and bias rows): it predicts b where the original predicts a and the other way round, a regression
    that a baseline comparison and the gate must catch."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    tensors = load_file(out / "model.safetensors")
    for key in ("classifier.weight", "classifier.bias"):
        tensors[key][[a, b]] = tensors[key][[b, a]].clone()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def cvt_port_cli(*args, cwd=None, env=None) -> Ran:
    """``python -m cvt_port ARGS``, in this process (see :func:`run_main`)."""
    from cvt_port.cli import main

    return run_main(main, args, cwd=cwd, env=env)
