"""The bundled default: ``python -m evaluate`` with no arguments proves the whole pipeline for real.

It converts the bundled tiny CvT (original release format, trained on scikit-learn's digits by
``python -m evaluate.bundled.build``) with cvt_port, then evaluates in one pass over the bundled
validation images the original checkpoint (reference implementation), the converted model
(exact activation) and the converted model through the stock class (exact GELU), and gates the
conversion against the accuracy recorded in ``configs/cvt-tiny-digits.yaml``. No network.

The demo is a plan like any other (:func:`demo_plan`); the CLI runs it through the same API.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from cvt_port.variants import get_variant

from cvt_port.atomic import locked

from .runtime.allocation import launch_id, process_start_time, resolve_devices
from .plan import DEFAULT_OUTPUT, DataSpec, EvalPlan, ModelSpec, ReportSpec, RunSpec

BUNDLED = Path(__file__).resolve().parent / "bundled"
CHECKPOINT = BUNDLED / "cvt-tiny-digits.pth"
DATA = BUNDLED / "digits" / "val"
VARIANT = "cvt-tiny-digits"
# the processes of one launch start within this many seconds of each other (a stamp older than that is an earlier
# launch's, e.g. torchrun's default run id "none" repeats); a stamp of an earlier launch within it is still a
# conversion of the same bundled checkpoint
LAUNCH_SKEW_S = 300


def demo_plan(data: DataSpec = DataSpec(), run: RunSpec | None = None, report: ReportSpec = ReportSpec()) -> EvalPlan:
    """The demo's plan: the bundled checkpoint converted into ``<output>/cvt-tiny-digits-hf`` (done here,
    replacing the folder: it is the demo's own output), evaluated beside the original and the stock
    class on the bundled images. ``data`` keeps its subset/preprocessing choices; its source is replaced."""
    from cvt_port import convert

    output = Path(report.output if report.output is not None else DEFAULT_OUTPUT)
    converted = output / f"{VARIANT}-hf"
    plan = EvalPlan(
        models=ModelSpec(model=str(converted), config=VARIANT, reference=CHECKPOINT, with_stock=True),
        data=dataclasses.replace(data, source=str(DATA)),
        run=run if run is not None else RunSpec(),
        report=dataclasses.replace(report, output=output),
    )
    resolve_devices(plan.run)  # a device flag that contradicts srun/torchrun is refused before the conversion writes
    variant = get_variant(VARIANT)
    launch = launch_id()
    if launch is None:
        print(f"cvt-port demo: converting the bundled original checkpoint {CHECKPOINT.name} -> {converted}",
              file=sys.stderr)
        convert(CHECKPOINT, converted, variant=variant, overwrite=True)
    else:
        _convert_once_per_launch(convert, converted, variant, launch)
    print(f"cvt-port demo: evaluating original, converted and stock class on {DATA} "
          f"({variant.reference.get('num_samples')} images)", file=sys.stderr)
    return plan


def _convert_once_per_launch(convert, converted: Path, variant, launch: str) -> None:
    """Under srun/torchrun every process runs the demo: the first to take the lock beside the folder converts and
    stamps it with the launch's id; the others wait for the lock, see the stamp (written since the launch began)
    and use that folder. One writer, and no process loads a folder another is replacing."""
    stamp = converted.parent / f".{converted.name}.launch"
    with locked(converted):
        try:
            fresh = stamp.read_text(encoding="utf-8") == launch and stamp.stat().st_mtime >= process_start_time() - LAUNCH_SKEW_S
        except OSError:
            fresh = False
        if fresh and (converted / "conversion.json").is_file():
            print(f"cvt-port demo: using {converted}, converted by another process of this launch", file=sys.stderr)
            return
        print(f"cvt-port demo: converting the bundled original checkpoint {CHECKPOINT.name} -> {converted}",
              file=sys.stderr)
        convert(CHECKPOINT, converted, variant=variant, overwrite=True)
        stamp.write_text(launch, encoding="utf-8")
