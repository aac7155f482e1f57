"""``python -m benchmarks.first_batch OUT.json T0 EVALUATE_ARGS...``: ``python -m evaluate EVALUATE_ARGS`` up to its
first scored batch, then stop; OUT.json says when each step ended, in seconds since the command was started.

The time from the command to the first image scored (issue 26.4) is the product's own start-up: imports, the
models' folders, the walk of the data folder, the labels and the sampling (``evaluate.job.run_inputs``: or, from
a cache, the cache's own image list), the models, the DataLoader's first batch and its forward. This module is the
product's entry point (:func:`evaluate.cli.main`) with two observers and nothing changed: the end of
``run_inputs`` and the end of the first ``validation_step``; at the latter it writes OUT.json and stops the pass
with :class:`FirstBatchScored` (a ``BaseException``: Lightning tears the pass down and re-raises it, the CLI's
handlers of errors do not take it for one). T0 is ``time.time()`` when the benchmark started the command.
"""

from __future__ import annotations

import json
import sys
import time


class FirstBatchScored(BaseException):
    """The first batch is scored: what was to be measured is measured."""


def main(argv: list[str]) -> int:
    out, t0, args = argv[0], float(argv[1]), argv[2:]
    marks: dict = {}

    def mark(name: str) -> None:
        marks.setdefault(name, round(time.time() - t0, 3))

    import evaluate.cli as cli
    import evaluate.job as job
    from evaluate.validation.lightning_module import EvalModule

    mark("imports_s")
    run_inputs, step = job.run_inputs, EvalModule.validation_step

    def timed_inputs(*a, **k):
        started = time.time()
        got = run_inputs(*a, **k)
        marks["inputs_s"] = round(time.time() - started, 3)  # walk, labels, sampling (or the cache's list)
        marks["images"] = len(got[0].samples)
        mark("inputs_done_s")
        return got

    def first_step(self, batch, batch_idx):
        result = step(self, batch, batch_idx)
        mark("first_batch_s")
        marks["first_batch_images"] = int(len(batch["index"])) if "index" in batch else None
        raise FirstBatchScored()
        return result

    job.run_inputs, EvalModule.validation_step = timed_inputs, first_step
    try:
        rc = cli.main(args)
    except FirstBatchScored:
        rc = 0
    finally:
        job.run_inputs, EvalModule.validation_step = run_inputs, step
    with open(out, "w") as fh:  # a run that ended before any batch (an error) says what it reached and its status
        json.dump(marks if rc == 0 else {**marks, "rc": rc}, fh)
    return rc if rc or "first_batch_s" in marks else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
