"""Faults decided together: a rank never raises alone while the others wait in a collective.

A bad image or an exception in a step is recorded as a :class:`Fault` (plain data that crosses processes), the
rank stops reading data, and at the end of the pass every rank exchanges its faults and raises the same one-line
error (:func:`decide_faults`, :func:`fault_exception`; the exchange is
:meth:`evaluate.validation.lightning_module.EvalModule.decide`). A signal beats an error beats bad input, so
every rank ends with the same exit status.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from lightning.pytorch.utilities.exceptions import SIGTERMException

from cvt_port.errors import BadInput, first_line

from ..runtime.interrupts import Interrupted, interruption

# the order in which faults win the collective decision (a signal beats an error beats bad input)
_PRIORITY = {"terminated": 3, "interrupted": 2, "error": 1, "bad input": 0}


@dataclass(frozen=True)
class Fault:
    """What went wrong on one rank, as plain data that can cross processes."""

    kind: str  # "bad input" | "error" | "interrupted" | "terminated"
    message: str  # one line
    rank: int = 0

    @staticmethod
    def from_exception(exc: BaseException, rank: int = 0) -> "Fault":
        if isinstance(exc, BadInput):
            return Fault("bad input", first_line(exc), rank)
        if isinstance(exc, Interrupted):
            kind = "interrupted" if exc.signum == signal.SIGINT else "terminated"
            return Fault(kind, exc.signum.name, rank)
        if isinstance(exc, KeyboardInterrupt):
            return Fault("interrupted", "SIGINT", rank)
        if isinstance(exc, SIGTERMException):
            return Fault("terminated", "SIGTERM", rank)
        stopped = interruption(exc)  # a DataLoader worker that died of the same SIGTERM/SIGINT
        if stopped is not None:
            return Fault.from_exception(stopped, rank)
        return Fault("error", f"{type(exc).__name__}: {first_line(exc, 200)}", rank)


class FaultOnAnotherRank(RuntimeError):
    """An unexpected error on one rank, raised on every rank (an internal error: exit status 4)."""


def fault_exception(fault: Fault) -> BaseException:
    """The one exception every rank raises for the winning fault: same type, same line."""
    if fault.kind == "bad input":
        return BadInput(fault.message)
    if fault.kind == "terminated":  # exit 143 on every rank (evaluate.runtime.interrupts)
        return Interrupted(signal.SIGTERM)
    if fault.kind == "interrupted":  # exit 130
        return Interrupted(signal.SIGINT)
    return FaultOnAnotherRank(f"rank {fault.rank}: {fault.message}")


def decide_faults(faults: list[Fault]) -> Fault | None:
    """The fault every rank acts on: the highest kind, then the lowest rank, then its first fault."""
    if not faults:
        return None
    return min(enumerate(faults), key=lambda t: (-_PRIORITY[t[1].kind], t[1].rank, t[0]))[1]
