"""What a run gives back: the settings it ran with (:class:`RunFacts`, written into report.json), the
per-image predictions, and :class:`EvalResult` (figures, predictions, gate verdict, exit status)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cvt_port.errors import ExitStatus

# The gate's verdict -> the process's exit status: the one place that maps them.
VERDICT_EXIT_STATUS: Mapping[str, ExitStatus] = {
    "pass": ExitStatus.PASS,
    "fail": ExitStatus.FAIL,
    "not made": ExitStatus.NOT_MADE,
}


def exit_status(verdict: str) -> ExitStatus:
    return VERDICT_EXIT_STATUS[verdict]


# Several models in one job: the job's verdict is the worst of theirs. A failed check (1) is worse than a check not
# made (3), although 3 > 1: a failure is a finding about a model, "not made" only a lack of evidence; a job
# with one failing model must exit 1 whatever the others say. So the order is by meaning, not by number.
VERDICT_SEVERITY: tuple[str, ...] = ("pass", "not made", "fail")  # least to most severe


def worst_verdict(verdicts) -> str:
    return max(verdicts, key=VERDICT_SEVERITY.index)


@dataclass(frozen=True)
class RunFacts:
    """How the run was made: the settings part of the report record (see ``report.build_record``)."""

    model: str
    data: str
    layout: str
    subset: int | None  # number of images when a subset was evaluated
    seed: int | None
    subset_sha256: str
    img_size: int | None
    crop_pct: float | None
    interpolation: str | None
    preprocessing: str
    precision: str
    attention: str
    compile: bool
    cache: str | None
    devices: int
    world_size: int
    cluster_environment: str | None
    num_nodes: int = 1  # the nodes the launch's processes ran on (devices per node x num_nodes = world_size)
    # the numerics policy (evaluate.runtime.numerics.policy_record) and the hardware and libraries that ran it
    numerics: dict | None = None
    hardware: dict | None = None


@dataclass(frozen=True)
class Prediction:
    """One image: its label and, per model row, the top-k class indices (best first)."""

    image_id: str
    label: int
    top: Mapping[str, tuple[int, ...]]

    def top1(self, model: str) -> int:
        return self.top[model][0]


class _Verdict:
    """The gate's verdict of a record (``record["gate"]``) and the exit status it maps to."""

    record: dict

    @property
    def verdict(self) -> str:
        """The gate's verdict: "pass", "fail" or "not made"."""
        return self.record["gate"]

    @property
    def passed(self) -> bool:
        return self.exit_status is ExitStatus.PASS

    @property
    def exit_status(self) -> ExitStatus:
        return exit_status(self.verdict)


@dataclass(frozen=True)
class EvalResult(_Verdict):
    """The outcome of one run. ``record`` is exactly what report.json holds; ``output`` is where the
    reports were written (None when none were asked for, or on ranks other than the first)."""

    record: dict
    predictions: tuple[Prediction, ...]
    primary: str
    reference: str | None
    output: Path | None

    @property
    def checks(self) -> list[dict]:
        return self.record["checks"]

    @property
    def top1(self) -> float:
        return self.record["top1"]

    @property
    def top5(self) -> float:
        return self.record["top5"]

    @property
    def num_samples(self) -> int:
        return self.record["num_samples"]

    def model(self, name: str) -> dict:
        """One row of the side-by-side table (name, kind, preprocessing, top1, top5, agreement, ...)."""
        return next(m for m in self.record["models"] if m["name"] == name)


@dataclass(frozen=True)
class ManyEvalResult(_Verdict):
    """The outcome of a several-models job: one :class:`EvalResult` per model (``runs``, in the order given;
    each exactly what a run of that model alone gives back, figures and predictions), the table names
    (``names``), the job's ``record`` (report.json: ``{"gate": worst, "runs": [record, ...]}``) and the worst
    verdict as the job's (:func:`worst_verdict`)."""

    record: dict
    runs: tuple[EvalResult, ...]
    names: tuple[str, ...]
    output: Path | None

    def for_model(self, name: str) -> EvalResult:
        """One model's result, by its table name (the folder's name) or as it was given (folder or Hub id)."""
        for label, run in zip(self.names, self.runs):
            if name in (label, run.record["model"]):
                return run
        raise KeyError(f"no model {name!r} in this job; it has {', '.join(self.names)}")


@dataclass(frozen=True)
class SuiteResult(_Verdict):
    """The outcome of a suite job (``data.suite``): one result per test set (``sets``, in the file's order; each
    exactly what a run on that set alone gives back), the sets' names (``names``), the job's ``record``
    (report.json: ``{"suite": name, "sets": [record, ...], "gate": worst}``, each set's record with its ``set``
    name) and the worst set's verdict as the job's (:func:`worst_verdict`)."""

    record: dict
    sets: tuple[EvalResult | ManyEvalResult, ...]
    names: tuple[str, ...]
    output: Path | None

    def for_set(self, name: str) -> EvalResult | ManyEvalResult:
        """One set's result, by its name in the suite file."""
        if name not in self.names:
            raise KeyError(f"no set {name!r} in this suite; it has {', '.join(self.names)}")
        return self.sets[self.names.index(name)]
