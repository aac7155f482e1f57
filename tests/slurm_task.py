"""A task of a real SLURM job in the tests: ``python tests/slurm_task.py MARKS [python -m evaluate flags]``.

The task itself is a small wrapper that ignores SIGTERM and SIGINT, so that a ``scancel`` acts on what it starts
only: ``python -m evaluate`` (the real CLI) in a child with the signals as a new process has them, decoding each
image slowly (``SLOW_S`` seconds) so that a test can act during the pass. It records, under MARKS, the child's pid
(``pid-<rank>``), that it checked the launch and starts the heavy imports (``started-<rank>``), each image the child reads (``read-<rank>.log``), and the child's exit status (``rc-<rank>``;
``128+N`` for a death by signal N). Its rank is torchrun's ``RANK``, else ``SLURM_PROCID`` in a step, else ``batch``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def rank() -> str:
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return os.environ["RANK"]
    return os.environ["SLURM_PROCID"] if "SLURM_STEP_ID" in os.environ else "batch"


def write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def child(marks: str, argv: list[str]) -> int:
    """``python -m evaluate argv`` as its ``__main__`` runs it, with a slow decode installed once the CLI has
    checked the launch and imported Lightning (its own order of imports is kept: torch is not imported first)."""
    import evaluate.cli as cli

    log = os.path.join(marks, f"read-{rank()}.log")
    quiet = cli.quiet_libraries

    def quiet_then_slow(verbose: bool):
        write(os.path.join(marks, f"started-{rank()}"), "")  # the launch is checked; Lightning's import comes next
        context = quiet(verbose)  # the CLI enters it around its work
        import evaluate.pixels.dataset

        decode = evaluate.pixels.dataset.EvalDataset.__getitem__

        def slow(self, i):
            with open(log, "a") as fh:
                fh.write(f"{i} {time.time():.3f}\n")
            time.sleep(float(os.environ.get("SLOW_S", "0.5")))
            return decode(self, i)

        evaluate.pixels.dataset.EvalDataset.__getitem__ = slow
        return context

    cli.quiet_libraries = quiet_then_slow
    return cli.main(argv)


def wrap(marks: str, argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def as_new() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, __file__, "--child", marks, *argv], preexec_fn=as_new)
    me = rank()
    write(os.path.join(marks, f"pid-{me}"), str(proc.pid))
    rc = proc.wait()
    write(os.path.join(marks, f"rc-{me}"), str(128 - rc if rc < 0 else rc))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2], sys.argv[3:]))
    sys.exit(wrap(sys.argv[1], sys.argv[2:]))
