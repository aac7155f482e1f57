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
    # the numerics policy (evaluate.numerics.policy_record) and the hardware and libraries that ran it
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


@dataclass(frozen=True)
class EvalResult:
    """The outcome of one run. ``record`` is exactly what report.json holds; ``output`` is where the
    reports were written (None when none were asked for, or on ranks other than the first)."""

    record: dict
    predictions: tuple[Prediction, ...]
    primary: str
    reference: str | None
    output: Path | None

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
