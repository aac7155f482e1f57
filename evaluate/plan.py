"""The typed plan of one evaluation run: what to evaluate, the data, how to run, what to report.

The CLI parses its flags once into an :class:`EvalPlan`; the Python API builds one from keyword
arguments; the no-argument demo builds one for the bundled model. Everything after that takes the
plan (or explicit typed arguments), never parsed command-line arguments. A plan is frozen and
checked once, when it is made (:meth:`EvalPlan.__post_init__`): a plan that exists is well-formed.
Whether the files it names exist is found out when they are read, before the first batch.

Errors name plan fields (``data.subset``) and values, not flags: the CLI maps fields to its flags
(:data:`evaluate.cli.FLAGS`), so the same error reads naturally in Python and on the command line.
A hint inside any one-line error names a field the same way ("use data.skip_bad_images") and the CLI
shows it as its flag (:func:`name_fields`): the library never spells a flag.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from cvt_port.errors import BadInput, first_line

DEFAULT_OUTPUT = Path("cvt-port-output")  # where reports go when no output is given (CLI and demo)
DEFAULT_LOG_DIR = Path("lightning_logs")  # Lightning's own default folder for its loggers
LOGGERS: tuple[str, ...] = ("csv", "tensorboard", "wandb", "mlflow")

Attention = Literal["einsum", "sdpa"]
LabelNumbering = Literal["index0", "devkit"]
# which of the model's classes the images are scored over (evaluate.sources.label_space); None: detected from the data
LabelSpaceName = Literal["full", "imagenet-a", "imagenet-r", "data"]
LABEL_SPACES: tuple[str, ...] = ("full", "imagenet-a", "imagenet-r", "data")
ATTENTIONS: tuple[str, ...] = ("einsum", "sdpa")


class _Choice(str, enum.Enum):
    """A string choice: compares, hashes and serialises (JSON, f-strings) as its value."""

    def __str__(self) -> str:
        return self.value


class Mode(_Choice):
    """One preprocessing a model reads."""

    RELEASE = "release"  # the release's evaluation rules (torchvision's, on PIL images)
    HF = "hf"  # the model folder's own image processor


class Preprocessing(_Choice):
    """The run's preprocessing choice; ``both`` runs the primary model under each mode."""

    RELEASE = "release"
    HF = "hf"
    BOTH = "both"

    @property
    def modes(self) -> tuple[Mode, ...]:
        return (Mode.RELEASE, Mode.HF) if self is Preprocessing.BOTH else (Mode(self.value),)


class ModelKind(_Choice):
    """How a candidate model is built."""

    EXACT = "exact"  # a cvt_port folder through cvt_port.load_model (QuickGELU, as the original)
    STOCK = "stock"  # the same folder through the stock CvtForImageClassification (exact GELU)
    AUTO = "auto"  # any Hugging Face image-classification folder (AutoModelForImageClassification)
    REFERENCE = "reference"  # an original release .pth through the reference implementation


# a plan field named in a message: "data.labels_file", not a part of a path such as "a/data.source.txt"
_FIELD_RE = re.compile(r"(?<![\w./\\-])((?:models|data|run|report)\.[a-z_]+)\b(?![/\\-]|\.\w)")


def name_fields(text: str, name) -> str:
    """``text`` with each plan field it names (``data.skip_bad_images``) shown as ``name(field)``."""
    return _FIELD_RE.sub(lambda m: name(m.group(1)), text)


class PlanError(BadInput):
    """A plan value that cannot be used (exit status 2). ``fields`` are plan field names
    (``"data.subset"``), ``value`` the offending value (``None`` when several fields are meant);
    the message may name other fields too (``"use data.labels_file"``)."""

    def __init__(self, fields: str | tuple[str, ...], message: str, value: object = None):
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)
        self.value, self.message = value, message
        super().__init__(self.render(lambda f: f))

    def render(self, name) -> str:
        """The message with each field shown as ``name(field)`` (the CLI passes its flag names)."""
        where = "/".join(name(f) for f in self.fields)
        return f"{where}{'' if self.value is None else f' {self.value}'}: {name_fields(self.message, name)}"


class ModelEntry(NamedTuple):
    """One model of a job: its folder (or Hub id), its variant (None: conversion.json's) and the original release
    .pth it is compared with on the same batches (None: none)."""

    model: str
    config: str | None = None
    reference: Path | None = None


@dataclass(frozen=True)
class ModelSpec:
    """What to evaluate: a job of one or several models (:attr:`entries`) and how each is loaded.

    ``model``/``config``/``reference`` are the first model's entry, ``extra_models`` the others' (a job of one has
    ``extra_models == ()``): ``ModelSpec(model=..., reference=...)`` is a run of one model as it always was. The job
    (:mod:`evaluate.job`) reads :attr:`entries` only; a reference needs a job of one (:func:`check_several_models`)."""

    model: str | None = None  # converted folder, Hugging Face folder or Hub id
    config: str | None = None  # variant name or YAML path; None: the variant recorded in conversion.json
    extra_models: tuple[ModelEntry, ...] = ()  # the second, third, ... model of a several-models job
    reference: Path | None = None  # original release .pth, run on the same batches
    # the original only on the paired checks' seeded sample, when the weights are provably its own
    # (evaluate.verdict.reference_sample, evaluate.models.same_weights)
    reference_sample: bool = False
    stock: bool = False  # the primary model through the stock class (exact GELU)
    with_stock: bool = False  # the stock class as an extra row
    # run code that comes with a model folder or Hub repository (auto_map); a folder cvt_port wrote is served by
    # the package's own classes instead of its copy (cvt_port.remote.is_package_copy)
    trust_remote_code: bool = False

    @property
    def entries(self) -> tuple[ModelEntry, ...]:
        """Every model of the job, the first one first."""
        first = (ModelEntry(self.model, self.config, self.reference),) if self.model else ()
        return (*first, *self.extra_models)


@dataclass(frozen=True)
class DataSpec:
    """The data and which images of it."""

    source: str | None = None  # folder, parquet, datasets folder or Hub dataset id
    labels_file: Path | None = None
    split: str = "validation"
    image_column: str | None = None
    label_column: str | None = None
    label_numbering: LabelNumbering | None = None  # what class numbers in a labels file mean (never guessed)
    devkit_map: Path | None = None  # "<ILSVRC2012_ID> <WNID>" lines, for label_numbering "devkit"
    label_space: LabelSpaceName | None = None  # the classes scored; None: ImageNet-A/-R when the data are theirs, else full
    subset: int | None = None  # a deterministic class-balanced subset of this many images
    seed: int = 0
    subset_file: Path | None = None  # exactly these image ids (wins over subset)
    preprocessing: Preprocessing = Preprocessing.RELEASE
    skip_bad_images: bool = False
    # read parquet, shards or a Hub dataset as a stream (labels first; only the chosen images are decoded)
    streaming: bool = False
    revision: str | None = None  # the Hub dataset's commit, tag or branch (a Hub id only)
    # several test sets in one job: a YAML file of sets, each its own source, subset, labels and gate
    # (evaluate.suite); the other data fields then come from the file, set by set
    suite: Path | None = None
    # this data's own gate over the variant's (a suite file's set gives it): ("recorded_top1", 70.4) (None: no figure
    # recorded for this data), ("recorded_images", N), ("recorded_in", "suite.yaml: set 'v2'": where the figure was
    # given, named by the check) and any gate setting, as sorted (key, value) pairs
    gate: tuple[tuple[str, float | str | None], ...] = ()


MAX_DEFAULT_WORKERS = 8  # past this, decoding outpaces one device and workers only cost memory


def default_num_workers(environ: dict[str, str] | None = None) -> int:
    """DataLoader workers per process: the CPUs this process may use, shared among the processes of this
    node that draw from the same CPUs, at least 1 and at most :data:`MAX_DEFAULT_WORKERS`.

    The CPUs: ``SLURM_CPUS_PER_TASK`` (each task, one per device, is given its own), else the process's
    affinity (``os.sched_getaffinity``: what taskset, cgroups or a batch system allow, not the machine's
    count). Shared by: ``LOCAL_WORLD_SIZE`` processes under torchrun (they inherit one affinity), else the
    devices ``CUDA_VISIBLE_DEVICES`` lists. Read from the environment only: the CLI's help needs no torch."""
    env = os.environ if environ is None else environ
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_task = _positive(env.get("SLURM_CPUS_PER_TASK"))
    if per_task:
        cpus, sharers = min(per_task, affinity), 1
    else:
        visible = env.get("CUDA_VISIBLE_DEVICES")
        devices = len([d for d in visible.split(",") if d.strip()]) if visible else None
        cpus, sharers = affinity, _positive(env.get("LOCAL_WORLD_SIZE")) or devices or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // sharers))


def _positive(value: str | None) -> int | None:
    try:
        n = int(str(value).split("(")[0])  # SLURM may write counts as "4(x2)"
    except ValueError:
        return None
    return n if n > 0 else None


@dataclass(frozen=True)
class RunSpec:
    """How to run: Lightning's device settings and the speed options."""

    batch_size: int | Literal["auto"] = 64  # "auto": the largest power of two that fits the device (evaluate.validation.memory)
    num_workers: int = field(default_factory=default_num_workers)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int | None = None  # None: the launcher's nodes (SLURM, torchrun), else 1 (evaluate.runtime.allocation)
    strategy: str = "auto"
    precision: str = "32-true"
    cache_dir: Path | None = None
    attention: Attention = "einsum"
    compile: bool = False
    tf32: bool = False  # TF32 convolutions and matmuls for the candidates (the reference stays IEEE float32)
    reference_chunk: int | None = None  # the reference runs this many images at a time (None: the whole batch)


@dataclass(frozen=True)
class ReportSpec:
    """What to report: files in ``output`` (None: none written) and the terminal summary."""

    output: Path | None = DEFAULT_OUTPUT
    summary: bool = True  # the table, the checks and the GATE line on stdout
    verbose: bool = False  # Lightning's and transformers' own messages too (evaluate.runtime.quiet)
    # after a PASSED gate only (evaluate.reports.release): the results into the model folder's card, and/or one Hub commit
    # of the folder, the card with the results and the reports; create_pr/private/revision shape that commit
    update_card: bool = False
    push_to_hub: str | None = None
    create_pr: bool = False
    private: bool = False
    revision: str | None = None
    # Lightning loggers (experiment trackers) the final figures and the run's settings also go to; csv and
    # tensorboard write under log_dir, which accumulates runs (version_N), unlike output, which is one run's
    # and replaced whole at the end
    loggers: tuple[str, ...] = ()
    log_dir: Path = DEFAULT_LOG_DIR
    # An earlier run's output folder to compare this run's predictions with (evaluate.verdict.baseline). A report-side
    # field: it changes neither what is evaluated nor how, only what the reports compare and the gate checks.
    baseline: Path | None = None
    # What made the run, recorded in report.json's provenance: the command line (the CLI passes it as text:
    # parsed arguments never leave the CLI), ``evaluate_model(...)`` from the API, None when a plan is run as is.
    command: str | None = None


@dataclass(frozen=True)
class EvalPlan:
    """One evaluation run, checked once when made."""

    models: ModelSpec
    data: DataSpec
    run: RunSpec = field(default_factory=RunSpec)
    report: ReportSpec = field(default_factory=ReportSpec)

    def __post_init__(self) -> None:
        m, d, r = self.models, self.data, self.run
        if not m.model:
            raise PlanError("models.model", "no model given (a converted folder or Hub id)")
        if d.suite is not None:
            check_suite_plan(self)
        elif not d.source:
            raise PlanError("data.source", "no data given (an ImageNet validation folder, labels, or dataset)")
        if not isinstance(d.preprocessing, Preprocessing):
            raise PlanError("data.preprocessing", f"choose one of {', '.join(p.value for p in Preprocessing)}",
                            d.preprocessing)
        if d.label_space is not None and d.label_space not in LABEL_SPACES:
            raise PlanError("data.label_space", f"choose one of {', '.join(LABEL_SPACES)}", d.label_space)
        if d.subset is not None and d.subset <= 0:
            raise PlanError("data.subset", "must be a positive number of images", d.subset)
        if d.revision is not None and not d.streaming:
            raise PlanError("data.revision", "pins a streamed Hub dataset; add data.streaming", d.revision)
        if r.batch_size != "auto" and (not isinstance(r.batch_size, int) or r.batch_size <= 0):
            raise PlanError("run.batch_size", "must be a positive number of images or auto", r.batch_size)
        if m.reference_sample and m.reference is None:
            raise PlanError("models.reference_sample", "runs the original on a sample; give models.reference")
        if r.reference_chunk is not None and r.reference_chunk <= 0:
            raise PlanError("run.reference_chunk", "must be a positive number of images", r.reference_chunk)
        if r.num_nodes is not None and r.num_nodes <= 0:
            raise PlanError("run.num_nodes", "must be a positive number of nodes", r.num_nodes)
        if r.num_workers < 0:
            raise PlanError("run.num_workers", "must not be negative", r.num_workers)
        if r.attention not in ATTENTIONS:
            raise PlanError("run.attention", f"choose one of {', '.join(ATTENTIONS)}", r.attention)
        check_release_plan(self.report)
        if m.extra_models:
            check_several_models(self)
        unknown = [name for name in self.report.loggers if name not in LOGGERS]
        if unknown or len(set(self.report.loggers)) != len(self.report.loggers):
            raise PlanError("report.loggers", f"choose each of {', '.join(LOGGERS)} at most once",
                            ",".join(self.report.loggers))

    @property
    def modes(self) -> tuple[Mode, ...]:
        return self.data.preprocessing.modes


def check_several_models(plan: EvalPlan) -> None:
    """What a several-models job refuses, before anything is loaded: the options that concern one model (an
    original to compare with, an earlier run's predictions, a card or a Hub repo to write), and a model given twice
    (its rows would be indistinguishable)."""
    one_model = [("models.reference", any(e.reference is not None for e in plan.models.entries),
                  "compares one model with its original .pth"),
                 ("report.baseline", plan.report.baseline is not None, "compares one model's predictions"),
                 ("report.update_card", plan.report.update_card, "writes one model's card"),
                 ("report.push_to_hub", plan.report.push_to_hub is not None, "uploads one model")]
    for name, given, what in one_model:
        if given:
            raise PlanError(name, f"{what}; with several models, run it once per model with that model alone")
    seen: set[str] = set()
    for entry in plan.models.entries:
        if not entry.model:
            raise PlanError("models.model", "an empty model name; give a folder or Hub id")
        if entry.model in seen:
            raise PlanError("models.model", "is given twice; give each model once", entry.model)
        seen.add(entry.model)


# what a suite's set gives itself (evaluate.suite); the data fields a suite job may still set for every set
SUITE_WIDE_DATA = ("suite", "preprocessing")


def check_suite_plan(plan: EvalPlan) -> None:
    """A suite job (``data.suite``): every data setting but the preprocessing comes from the file, set by set, so a
    data field given too contradicts it; the options that concern one data set's run are refused as well."""
    defaults = DataSpec()
    for name in DataSpec.__dataclass_fields__:
        if name not in SUITE_WIDE_DATA and getattr(plan.data, name) != getattr(defaults, name):
            raise PlanError(f"data.{name}", "is given per test set in the suite file (data.suite); set it there",
                            getattr(plan.data, name))
    one_set = [("report.baseline", plan.report.baseline is not None, "compares one data set's predictions"),
               ("report.update_card", plan.report.update_card, "writes one run's results into the card"),
               ("report.push_to_hub", plan.report.push_to_hub is not None, "uploads one run's reports"),
               ("run.cache_dir", plan.run.cache_dir is not None, "holds one data set's pixels")]
    for name, given, what in one_set:
        if given:
            raise PlanError(name, f"{what}; with data.suite, run it on that set alone")


def check_release_plan(report) -> None:
    """The release options (``evaluate.reports.release``), as far as the plan alone says: options that need
    ``report.push_to_hub``, the repo id's syntax, and somewhere for the reports that are uploaded."""
    if report.push_to_hub is None:
        lone = [f for f in ("create_pr", "private") if getattr(report, f)]
        lone += ["revision"] if report.revision is not None else []
        if lone:
            raise PlanError(tuple(f"report.{f}" for f in lone), "only applies to an upload; add report.push_to_hub")
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(report.push_to_hub)
        if "/" not in report.push_to_hub:
            raise HFValidationError("a repo id names its owner")
    except HFValidationError as exc:
        raise PlanError("report.push_to_hub", f"is not a Hub repo id ({first_line(exc, 150)}); give OWNER/NAME",
                        report.push_to_hub) from None
    if report.revision is not None and not str(report.revision).strip():
        raise PlanError("report.revision", "is empty; give a branch name or leave it out")
    if report.output is None:
        raise PlanError("report.push_to_hub", "uploads the run's reports with the model; give report.output too",
                        report.push_to_hub)
def parse_loggers(values) -> tuple[str, ...]:
    """Logger names from a name, a comma list, or several of either, in order, each once."""
    if isinstance(values, str):
        values = [values]
    names = [n.strip() for v in values or () for n in str(v).split(",") if n.strip()]
    return tuple(dict.fromkeys(names))


def parse_devices(value: str | int) -> int | str:
    """Lightning's ``devices``: a count, ``auto``, or a device list such as ``0,1``."""
    if isinstance(value, int) or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        return value
