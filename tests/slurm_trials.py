"""By hand, not a test: ``python tests/slurm_trials.py N K`` (as root, slurm-wlm and munge installed).

N ``scancel`` trials of a 2-task job at varied moments (while starting, then after rank 0 read 1..5 of its 6 images)
and K ``kill -9`` trials of each rank, on a real one-node SLURM cluster (:mod:`slurmkit`), 4 jobs at a time. Prints
each job's exit statuses and last stderr lines; for a kill, the seconds from the kill to the survivor's exit.
"""
import os, sys, time, threading, shutil, tempfile
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE)); sys.path.append(str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import slurmkit
from test_slurm_cluster import Job, SRUN, TASK, act
from evalkit import wnids, make_tiny_model
from imagegen import make_imagefolder

N, K = int(sys.argv[1]), int(sys.argv[2])
root = Path(tempfile.mkdtemp(prefix="slurm-trials-"))
tiny = make_tiny_model(root / "tiny")
data = root / "data" / "val"; make_imagefolder(data, wnids(4, step=53), per_class=3)
c = slurmkit.Cluster(root / "slurm", two_nodes=False)
(root / "slurm").mkdir()
c.start()
moments = ["start", "1", "2", "3", "4", "5"]
jobs = [Job(f"scancel{i}", ["-p", "one", "--nodes=1", "--ntasks-per-node=2"], SRUN, slow_s=0.5,
            act=f"scancel:{moments[i % len(moments)]}") for i in range(N)]
jobs += [Job(f"kill{r}-{i}", ["-p", "one", "--nodes=1", "--ntasks-per-node=2"], SRUN, slow_s=1.0, act=f"kill:{r}")
         for i in range(K) for r in (0, 1)]
try:
    # in waves of 4 jobs (2 cores)
    for w in range(0, len(jobs), 4):
        wave = jobs[w:w + 4]
        for job in wave:
            job.marks, job.out = root / job.name, root / job.name / "out"
            job.marks.mkdir()
            argv = ["--model", tiny["hf"], "--config", tiny["yaml"], "--data", data, "--output", job.out,
                    "--accelerator", "cpu", "--num-workers", "0", "--batch-size", "2"]
            task = " ".join(map(str, [sys.executable, TASK, job.marks, *argv]))
            job.id = c.sbatch(SRUN.format(task=task, marks=job.marks), *job.options, f"--output={job.marks}/batch.out",
                              cwd=job.marks, env=c.env(SLOW_S=str(job.slow_s), OMP_NUM_THREADS="1"))
        deadline = time.monotonic() + 300
        ts = [threading.Thread(target=act, args=(c, j, deadline)) for j in wave]
        [t.start() for t in ts]; [t.join() for t in ts]
        while any(c.running(j.id) for j in wave) and time.monotonic() < deadline:
            time.sleep(0.3)
        for j in wave:
            rcs = (j.rc(0), j.rc(1))
            extra = ""
            if j.act.startswith("kill"):
                dead = int(j.act[-1]); surv = 1 - dead
                extra = f"notice {j.rc_time(surv) - j.acted_at:.2f}s lines={j.stderr(surv)[-2:]}"
            else:
                extra = f"lines={[j.stderr(r)[-1:] for r in (0, 1)]}"
            print(j.name, j.act, rcs, extra, flush=True)
finally:
    c.stop()
    shutil.rmtree(root, ignore_errors=True)
