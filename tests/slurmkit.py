"""A real SLURM cluster for the tests, made in a temporary folder and torn down after: Debian's ``slurm-wlm``
(slurmctld, slurmd, sbatch, srun, scancel) and ``munge``, as root.

- one node on this machine (loopback), named as the machine (its tasks resolve the step's first node by that
  name, as on a real cluster), declared with more CPUs than the machine has
  (``SlurmdParameters=config_overrides``) so that several jobs run at once;
- optionally two more, ``n1`` and ``n2``, each a ``slurmd`` in its own network, UTS and mount namespace: its own
  hostname and ``/etc/hosts`` (a file of the temporary folder bound over it), a veth pair to the controller and one
  between the two nodes, on private /30s of this machine's own (10.250.24.0/28); no route leads anywhere else.

Nothing outside the temporary folder is written but the namespaces and veth links themselves (named ``cvt24*``
with this process's pid), removed at the end. The daemons run in the foreground under the fixture
(``slurmctld -D``, ``slurmd -D``, ``munged -F``). Client commands find the cluster through ``SLURM_CONF``
(:meth:`Cluster.env`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

INSTALL = "apt-get install -y slurm-wlm munge (as root)"
TOOLS = ("slurmctld", "slurmd", "sbatch", "srun", "scancel", "squeue", "sinfo", "munged", "ip", "unshare", "nsenter")


def missing(which=shutil.which, euid: int | None = None) -> str | None:
    """Why a cluster cannot be made here (one line), or None."""
    absent = [t for t in TOOLS if which(t) is None and which(f"/usr/sbin/{t}") is None]
    if absent:
        return f"a real SLURM cluster needs {', '.join(absent)}: {INSTALL}"
    if (os.geteuid() if euid is None else euid) != 0:
        return f"a real SLURM cluster is started as root (munged, slurmd, network namespaces): run the tests as root; {INSTALL}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


class Cluster:
    """slurmctld + slurmd(s) + munged in ``root``; :meth:`start` then :meth:`stop`."""

    def __init__(self, root: Path, two_nodes: bool = True):
        self.root, self.two_nodes = Path(root), two_nodes
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.tag = f"cvt24{os.getpid() % 100000}"
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.two_nodes_error: str | None = None

    def env(self, **more: str) -> dict[str, str]:
        """This process's environment without any SLURM job's variables, pointed at this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC", "MASTER_"))}
        return {**env, "SLURM_CONF": str(self.conf), **more}

    # ------------------------------------------------------------------------------------------------- start
    def start(self) -> "Cluster":
        why = missing()
        if why:
            raise RuntimeError(why)
        r = self.root
        self.node = socket.gethostname()
        for d in ("state", f"spool/{self.node}", "spool/n1", "spool/n2"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon("munged", ["munged", "-F", "-f", f"--key-file={key}", f"--socket={r / 'munge.sock'}",
                                f"--pid-file={r / 'munged.pid'}", f"--log-file={r / 'munged.log'}",
                                f"--seed-file={r / 'munged.seed'}"])
        self._wait(lambda: (r / "munge.sock").exists(), "munged did not start", r / "munged.log")
        self.conf.write_text(self._slurm_conf(free_port(), free_port()))
        self._daemon("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._daemon("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)])
        if self.two_nodes:
            try:
                self._namespaces()
            except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
                err = getattr(exc, "stderr", "") or str(exc)
                self.two_nodes_error = f"two-node namespaces could not be made: {err.strip().splitlines()[-1:]}"
        self._wait(lambda: self._idle("one") >= 1, f"node {self.node} never became idle", r / "slurmctld.log")
        if self.two_nodes and self.two_nodes_error is None:
            try:
                self._wait(lambda: self._idle("two") >= 2, "nodes n1, n2 never became idle", r / "slurmd-n1.log")
            except RuntimeError as exc:
                self.two_nodes_error = str(exc)
        return self

    def _slurm_conf(self, ctld_port: int, slurmd_port: int) -> str:
        r = self.root
        lines = [
            "ClusterName=cvttest", f"SlurmctldHost={socket.gethostname()}", f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
            f"AuthInfo=socket={r / 'munge.sock'}", "CredType=cred/munge", f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n", f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd'}-%n.pid", f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd'}-%n.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides", "SwitchType=switch/none",
            "MinJobAge=300", "KillWait=30", "SchedulerParameters=sched_interval=1",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs=32 State=UNKNOWN",
            f"PartitionName=one Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        if self.two_nodes:
            lines += ["NodeName=n1 NodeHostname=n1 NodeAddr=10.250.24.2 CPUs=4 State=UNKNOWN",
                      "NodeName=n2 NodeHostname=n2 NodeAddr=10.250.24.6 CPUs=4 State=UNKNOWN",
                      "PartitionName=two Nodes=n1,n2 MaxTime=INFINITE State=UP"]
        return "\n".join(lines) + "\n"

    def _namespaces(self) -> None:
        """n1 and n2: a namespace each, a veth pair to the controller (10.250.24.0/30, .4/30) and one between them
        (.8/30); each node reaches the other's controller-facing address over that link, and the controller's
        other address through its own link (host routes only: no default route, no forwarding)."""
        t, host = self.tag, socket.gethostname()
        plan = {"n1": ("10.250.24.1", "10.250.24.2", "10.250.24.9", "10.250.24.6", "10.250.24.10", "10.250.24.5"),
                "n2": ("10.250.24.5", "10.250.24.6", "10.250.24.10", "10.250.24.2", "10.250.24.9", "10.250.24.1")}
        for node in plan:
            ns = f"{t}{node}"
            _run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
        for node, (ctl, own, *_rest) in plan.items():
            ns, outer, inner = f"{t}{node}", f"{t}h{node[1]}", f"{t}v{node[1]}"
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self.links.append(outer)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "addr", "add", f"{ctl}/30", "dev", outer)
            _run("ip", "link", "set", outer, "up")
            _run("ip", "-n", ns, "addr", "add", f"{own}/30", "dev", inner)
            _run("ip", "-n", ns, "link", "set", inner, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "add", f"{t}x1", "type", "veth", "peer", "name", f"{t}x2")
        self.links.append(f"{t}x1")
        for node, (ctl, own, link, other, other_link, ctl_other) in plan.items():
            ns, dev = f"{t}{node}", f"{t}x{node[1]}"
            _run("ip", "link", "set", dev, "netns", ns)
            _run("ip", "-n", ns, "addr", "add", f"{link}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "route", "add", f"{other}/32", "via", other_link)
            _run("ip", "-n", ns, "route", "add", f"{ctl_other}/32", "via", ctl)
            hosts = self.root / f"hosts-{node}"
            hosts.write_text(f"127.0.0.1 localhost\n{ctl} {host}\n10.250.24.2 n1\n10.250.24.6 n2\n")
            script = (f"mount --bind {hosts} /etc/hosts && hostname {node} && "
                      f"exec slurmd -D -N {node} -f {self.conf}")
            # nsenter, not `ip netns exec`: that one remounts /sys for the namespace, hiding the cgroup file system
            # slurmd's plugins read
            self._daemon(f"slurmd-{node}", ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount",
                                            "--propagation", "private", "sh", "-c", script])

    def _daemon(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root))

    def _idle(self, partition: str) -> int:
        r = subprocess.run(["sinfo", "-h", "-p", partition, "-t", "idle", "-o", "%D"], capture_output=True, text=True,
                           env=self.env(), timeout=30)
        return int(r.stdout.strip() or 0) if r.returncode == 0 else 0

    def _wait(self, ready, what: str, log: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise RuntimeError(f"{what} within {timeout:.0f} s: {tail}")
            time.sleep(0.2)

    # ------------------------------------------------------------------------------------------------- stop
    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env(), capture_output=True, timeout=30)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    # ------------------------------------------------------------------------------------------------- jobs
    def sbatch(self, script: str, *options: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        """Submit ``script`` (its text); the job id."""
        path = cwd / f"job-{time.monotonic_ns()}.sbatch"
        path.write_text("#!/bin/bash\n" + script)
        r = subprocess.run(["sbatch", "--parsable", *options, str(path)], capture_output=True, text=True,
                           env=env or self.env(), cwd=cwd, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def scancel(self, job: str) -> None:
        subprocess.run(["scancel", job], env=self.env(), capture_output=True, timeout=30, check=True)

    def running(self, job: str) -> bool:
        r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, env=self.env(),
                           timeout=30)
        return r.stdout.strip() not in ("", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT")
