"""Start-up to a refusal: how long ``python -m evaluate`` takes to refuse a launch, against ``import torch``.

A refusal (a flag that contradicts the launcher's allocation, SLURM's batch script run without ``srun``) is read
from the environment and the flags before torch, Lightning or transformers is imported
(:func:`evaluate.cli.check_launch`), so it must come within 1.5x the time a bare ``python -c "import torch"``
takes on the same machine; inside a loaded ``srun`` step the imports it skips were most of the wait. Each case is
a real process under the measuring middleman, the cases interleaved, ``repeats`` times (the median reported):

- ``import_torch``: ``python -c "import torch"`` (the yardstick);
- ``devices_in_step``: ``python -m evaluate --devices 4`` as task 1 of a 2-task ``srun`` step (the variables a
  SLURM 22.05 srun sets): exit 2, one line naming --devices and SLURM_STEP_TASKS_PER_NODE;
- ``batch_step``: ``python -m evaluate`` in the batch script of a 2-task job (no step): exit 2, one line saying
  to launch it with srun.

``python -m benchmarks.startup`` runs it alone (about 5 s a repeat on 2 cores).
"""

from __future__ import annotations

import sys

from .report import fr, row, yn
from .timing import fmt, met, median, progress, ratio, slim, target_dict
from .workspace import Workspace

KEY = "7_startup"
NEEDS: tuple[str, ...] = ()
USES_MODEL = False  # no model, no data: the refusals come before either is read
USES_PHOTOS = False

_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOBID": "4242", "SLURM_JOB_NAME": "eval.sbatch", "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODELIST": "localhost"}
_STEP = {**_JOB, "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NUM_NODES": "1",
         "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_STEP_NODELIST": "localhost", "SLURM_PROCID": "1",
         "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}
_BATCH = {**_JOB, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}

CASES = {
    "import_torch": ([sys.executable, "-c", "import torch"], {}),
    "devices_in_step": ([sys.executable, "-m", "evaluate", "--devices", "4"], _STEP),
    "batch_step": ([sys.executable, "-m", "evaluate"], _BATCH),
}


def run(ws: Workspace, sections: dict) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in CASES}
    for r in range(ws.plan.repeats):
        for name, (cmd, env) in CASES.items():
            rec = ws.runner.run(f"startup-{name}-r{r}", cmd, timeout=300, env=env)
            rec["stderr_lines"] = [line for line in rec["stderr_tail"].splitlines() if line.strip()]
            runs[name].append(slim(rec))
            progress(f"  {name} r{r}: exit {rec['rc']}, {rec['wall_s']:.2f} s")
    walls = {name: median([rec["wall_s"] for rec in recs]) for name, recs in runs.items()}
    ratios = {name: ratio(walls[name], walls["import_torch"]) for name in CASES if name != "import_torch"}
    return {
        "description": "wall time from start to the refusal (exit 2, one line) of python -m evaluate under a "
                       "simulated SLURM launch, against python -c 'import torch' (median of the repeats, the cases "
                       "interleaved)",
        "runs": runs,
        "median_wall_s": walls,
        "exit_statuses": {name: sorted({rec["rc"] for rec in recs}) for name, recs in runs.items()},
        "ratios": ratios,
        "target": target_dict("startup_refusal"),
        "met": {name: met(r["value"], "startup_refusal") for name, r in ratios.items()},
    }


def rows(results: dict) -> list[dict]:
    s = results["sections"][KEY]
    w = s["median_wall_s"]
    return [row("7", f"refusal at start-up ({name})",
                f"{fmt(w[name], '.2f')} s to exit {s['exit_statuses'][name]} / import torch {fmt(w['import_torch'], '.2f')} s",
                fr(s["ratios"][name]), "<= 1.5", yn(s["met"][name])) for name in s["ratios"]]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(only=["startup"]))
