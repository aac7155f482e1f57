"""A release that is made only after the gate passed: results on the model card, and a gated upload.

Two steps follow a run whose gate PASSED, and nothing else ever triggers them:

- ``report.update_card``: the model folder's ``README.md`` gets the measured results as ``model-index``,
  built with huggingface_hub's ``ModelCard``, ``ModelCardData`` and ``EvalResult`` (:func:`eval_results`). The
  rest of the card (license, base_model, datasets, tags, the converter's parity certificate) is kept as it was;
  earlier results of the same kind (same task, dataset and split) are replaced, not piled up. The card is
  replaced atomically (:func:`write_atomic`): a reader sees the old card or the new one.
- ``report.push_to_hub``: one commit to the Hub repo (``HfApi.create_commit``) with every file of the model
  folder, the card with the results (also when the local card is not updated) and the run's reports under
  ``eval/``; optionally as a pull request (``create_pr``), to a branch (``revision``), in a private repo
  (``private``, applied when the repo is created).

On fail, not made, bad input, an internal error or an interrupt neither step runs: the card stays
byte-identical and nothing is uploaded. Whatever can be checked is checked before the first batch
(``evaluate.plan.check_release_plan`` when the plan is made, :func:`check_before_pass` when the run starts): a
Hub id cannot get a card written (there is no local folder), the folder must be writable and its card must
parse, the repo id must be valid, a token must be present and the Hub reachable in principle (not
``HF_HUB_OFFLINE``).

Only rank 0 releases (``evaluate.run`` calls :func:`release` inside its rank-0 report work).

Exit status when the upload fails after a pass: 3 (not made), raised as :class:`ReleaseError`. Why not 1:
1 means a check failed, and the model did not fail anything (a CI job reading 1 would report a regression
that does not exist). Why not 4: an unreachable Hub or a refused token is the environment, not a bug with a
traceback to report. Why not 2: the input was checked and usable. 3 says what happened: the gate's verdict is
PASS (report.json says so) but the release that was asked for was not made; running again makes it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cvt_port.errors import BadInput, ExitStatus, first_line
from cvt_port.outputs import WRITE_ERRNOS, cannot_write

from ..runtime.interrupts import Interrupted
from ..plan import PlanError

CARD = "README.md"
EVAL_DIR = "eval"  # the run's reports, in the Hub repo
TASK_TYPE, TASK_NAME = "image-classification", "Image Classification"
IMAGENET_1K = "imagenet-1k"
HUB = "https://huggingface.co"


class ReleaseError(Exception):
    """The gate passed, but the upload asked for was not made (exit status 3; see the module docstring)."""

    exit_status = ExitStatus.NOT_MADE


class ReleaseInterrupted(Interrupted):
    """A signal during the upload: the reports (and the card) are written; the Hub commit was not made unless
    it had completed (a commit is all or nothing)."""

    def __init__(self, signum: int, repo_id: str):
        super().__init__(signum)
        self.args = (f"{self.signum.name}: stopped during the upload to {repo_id}, after the gate passed (reports "
                     "written); the Hub commit is all or nothing: check the repo and run again",)

    def __str__(self) -> str:
        return self.args[0]


# -- checked before the pass -------------------------------------------------------------------------------------


def check_before_pass(report, model: str) -> None:
    """What the environment says, before any model or data is loaded: a local folder whose card can be written
    and parsed; a token, and not offline, for an upload. One-line :class:`BadInput` (exit 2)."""
    if not (report.update_card or report.push_to_hub):
        return
    wants = "report.update_card" if report.update_card else "report.push_to_hub"
    folder = Path(model)
    if not folder.is_dir():
        raise PlanError(wants, f"needs a local model folder, and {model} is not one (a Hub id's card is the Hub's "
                        "to change): download or convert the model into a folder and evaluate that")
    card = folder / CARD
    if card.exists():
        load_card(card)  # a card that does not parse is found now, not after the pass
    if report.update_card:
        try:  # a real write test: os.access says yes to root in a read-only mount
            tmp = folder / f".{CARD}.write-test-{os.getpid()}-{secrets.token_hex(4)}"
            tmp.touch(exist_ok=False)
            tmp.unlink()
        except OSError as exc:
            raise BadInput(f"report.update_card: cannot write the model card in {folder}: "
                           f"{exc.strerror or type(exc).__name__}; make the folder writable or leave the card "
                           "alone") from None
    if report.push_to_hub:
        import huggingface_hub
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise PlanError("report.push_to_hub", "cannot upload offline (HF_HUB_OFFLINE is set); unset it or "
                            "leave the upload out", report.push_to_hub)
        if huggingface_hub.get_token() is None:
            raise PlanError("report.push_to_hub", "no Hugging Face token: log in with `hf auth login` or set "
                            "HF_TOKEN", report.push_to_hub)


def load_card(path: Path):
    """The folder's card, or a one-line :class:`BadInput` naming it."""
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(Path(path))
    except Exception as exc:  # YAML errors, a model-index that is not one
        raise BadInput(f"{path}: the model card does not parse ({type(exc).__name__}: {first_line(exc, 150)}); "
                       "fix or remove its YAML header") from None


# -- the card ----------------------------------------------------------------------------------------------------


def dataset_facts(record: dict, split: str, variant, primary: str | None = None) -> dict:
    """The ``dataset`` of the model-index: a Hub dataset id when the data was one, else ``imagenet-1k`` when the
    classes are ImageNet-1k's, else the generic ``imagefolder`` (the bundled digits are not ImageNet). The
    preprocessing is the primary model's (the figures are its), not the run's choice (``both``)."""
    hub_data = record.get("layout") == "datasets" and not Path(str(record.get("data"))).exists()
    imagenet = variant is None or variant.labels == "imagenet-1k"
    if hub_data:
        kind, name = str(record["data"]), f"{record['data']} ({split})"
    elif imagenet:
        kind, name = IMAGENET_1K, "ImageNet-1k validation"
    else:
        kind, name = "imagefolder", str((variant.reference or {}).get("dataset") or Path(record["data"]).name)
    rows = [m.get("preprocessing") for m in record.get("models", []) if m.get("name") == primary]
    args = {"num_images": record["num_samples"], "preprocessing": rows[0] if rows else record["preprocessing"],
            "img_size": record["img_size"], "crop_pct": record["crop_pct"], "interpolation": record["interpolation"]}
    if record.get("subset") is not None:  # which images: the ordered list's sha256 reproduces the subset
        args.update(subset=True, image_list_sha256=record["subset_sha256"], seed=record.get("seed"))
    return {"dataset_type": kind, "dataset_name": name, "dataset_split": split if hub_data else "validation",
            "dataset_args": {k: v for k, v in args.items() if v is not None}}


def eval_results(record: dict, split: str = "validation", variant=None, source_url: str | None = None,
                 primary: str | None = None) -> list:
    """The run's results as ``EvalResult`` entries: top-1 (``accuracy``), top-5 (``top_5_accuracy``) and
    ImageNet-ReaL top-1 when measured, in percent as report.json has them; each says the precision and the
    gate's verdict and checks (``metric_args``)."""
    from huggingface_hub import EvalResult

    common = dict(task_type=TASK_TYPE, task_name=TASK_NAME, **dataset_facts(record, split, variant, primary))
    if source_url is not None:
        common.update(source_name="cvt-port evaluate report", source_url=source_url)
    args = {"precision": record["precision"], "attention": record["attention"], "gate": record["gate"],
            "gate_checks": [c["name"] for c in record["checks"] if c["status"] == "pass"]}
    out = [EvalResult(metric_type="accuracy", metric_name="top-1 accuracy (%)", metric_value=record["top1"],
                      metric_args=args, **common),
           EvalResult(metric_type="top_5_accuracy", metric_name="top-5 accuracy (%)", metric_value=record["top5"],
                      metric_args=args, **common)]
    if record.get("real_top1") is not None:
        out.append(EvalResult(metric_type="accuracy", metric_name="ImageNet-ReaL top-1 accuracy (%)",
                              metric_config="real", metric_value=record["real_top1"], metric_args=args, **common))
    return out


def card_with_results(folder: Path, results: list, name: str | None = None):
    """The folder's card (a new one when it has none) with ``results`` in place of earlier ones of the same
    kind (same task, dataset, config, split and revision: ``EvalResult.unique_identifier``). The model-index
    ``name``: the card's own when it has one, else ``name``, else the folder's."""
    from huggingface_hub import ModelCard, ModelCardData

    path = Path(folder) / CARD
    if path.exists():
        card = load_card(path)
    else:
        card = ModelCard(f"---\n{ModelCardData(library_name='transformers').to_yaml()}\n---\n\n# {Path(folder).name}"
                         "\n\nResults measured by cvt-port (`python -m evaluate`) after its release gate passed.\n")
    kinds = {r.unique_identifier for r in results}
    kept = [r for r in (card.data.eval_results or []) if r.unique_identifier not in kinds]
    card.data.model_name = card.data.model_name or name or Path(folder).name
    card.data.eval_results = kept + results
    return card


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename (a temporary file beside it, flushed to disk first); the
    file's permissions are kept. On any error or interrupt the old file is untouched and the temporary gone."""
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- the upload --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """What was uploaded: the repo, the branch, the commit (or pull request) url, the files in the commit."""

    repo_id: str
    revision: str
    url: str
    files: tuple[str, ...]


def commit_operations(folder: Path, card_text: str, output: Path | None) -> list:
    """Every file of the model folder (hidden files and caches left out), the card with the results, and the
    run's reports (the plain files of ``output``) under ``eval/``."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    ops = [CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card_text.encode("utf-8"))]
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.as_posix() != CARD and not any(p.startswith(".") or p == "__pycache__"
                                                                  for p in rel.parts):
            ops.append(CommitOperationAdd(path_in_repo=rel.as_posix(), path_or_fileobj=str(path)))
    if output is not None:
        for path in sorted(Path(output).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                ops.append(CommitOperationAdd(path_in_repo=f"{EVAL_DIR}/{path.name}", path_or_fileobj=str(path)))
    return ops


def upload(report, folder: Path, card_text: str, output: Path | None, record: dict, api=None) -> Upload:
    """One commit to ``report.push_to_hub`` (created if need be), on ``report.revision`` (created from the main
    branch if need be) or as a pull request. A failure is a one-line :class:`ReleaseError`."""
    from huggingface_hub import HfApi

    api = api if api is not None else HfApi()
    repo_id, revision = report.push_to_hub, report.revision
    ops = commit_operations(folder, card_text, output)
    gate = ", ".join(c["name"] for c in record["checks"] if c["status"] == "pass")
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=report.private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id=repo_id, repo_type="model", branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id=repo_id, repo_type="model", operations=ops, revision=revision, create_pr=report.create_pr,
            commit_message=f"cvt-port: release gate passed, top-1 {record['top1']:.2f}% on {record['num_samples']} "
                           f"images",
            commit_description=f"Uploaded by `python -m evaluate` after its release gate passed ({gate}). "
                               f"The run's reports are in `{EVAL_DIR}/`.")
    except (KeyboardInterrupt, Interrupted) as exc:
        import signal

        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise ReleaseInterrupted(signum, repo_id) from None
    except Exception as exc:  # network, auth, a missing branch: one line, the folder and reports stay
        raise ReleaseError(
            f"report.push_to_hub {repo_id}: upload failed ({type(exc).__name__}: {first_line(exc, 200)}); the gate "
            f"PASSED and the reports are written, but nothing was released; run again to upload") from None
    url = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or f"{HUB}/{repo_id}"
    return Upload(repo_id, revision or "main", str(url), tuple(op.path_in_repo for op in ops))


# -- after the pass ----------------------------------------------------------------------------------------------


def release(report, model: str, record: dict, output: Path | None, split: str = "validation", variant=None,
            primary: str | None = None, api=None) -> list[str]:
    """After a PASSED gate only: the results on the card (``report.update_card``) and the upload
    (``report.push_to_hub``); returns the lines that say what was done. Any other verdict: nothing at all."""
    if record["gate"] != "pass" or not (report.update_card or report.push_to_hub):
        return []
    folder = Path(model)
    source = None
    if report.push_to_hub:  # the report the results come from, where the commit puts it
        source = f"{HUB}/{report.push_to_hub}/blob/{report.revision or 'main'}/{EVAL_DIR}/report.json"
    name = report.push_to_hub.split("/")[-1] if report.push_to_hub else record.get("variant")
    card = card_with_results(folder, eval_results(record, split, variant, source, primary), name)
    text = str(card)
    lines = []
    if report.update_card:
        try:
            write_atomic(folder / CARD, text)
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            raise cannot_write(folder, exc, "report.update_card ") from None
        lines.append(f"model card updated with the results: {folder / CARD}")
    if report.push_to_hub:
        done = upload(report, folder, text, output, record, api)
        where = "pull request" if report.create_pr else f"branch {done.revision}"
        lines.append(f"released {len(done.files)} files to {done.repo_id} ({where}): {done.url}")
    return lines


__all__ = ["ReleaseError", "ReleaseInterrupted", "Upload", "card_with_results", "check_before_pass",
           "commit_operations", "eval_results", "release", "upload", "write_atomic"]
