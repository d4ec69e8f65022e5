"""A real SLURM cluster on 127.0.0.1 for the tests: Debian's Slurm 22.05 and munge
(../shared/docs/ENVIRONMENT.md has the recipe, docs/NOTES.md what was measured).

`SlurmCluster(tmpdir, nodes=2).start()` installs the packages if they are missing (as
root, with apt-get), starts munged (system key and socket), writes slurm.conf into the
temp directory and starts slurmctld and one slurmd per node against it. Several nodes on
one machine are several slurmd daemons (`slurmd -N n1`, `-N n2`) on their own ports, all at
NodeAddr 127.0.0.1: srun really places tasks on n1 and n2, which is what a multi-node
launch needs. Each node claims `cpus` CPUs and `memory_mb` of memory; with
`SlurmdParameters=config_overrides` and no cgroup enforcement these are what the scheduler
packs jobs by (the profile's per-rule memory requests fit), not limits. Finished jobs stay
in `squeue --states=all` for MinJobAge (an hour), which is what the tests read job
histories from (there is no accounting database, so no sacct). Clients find the cluster
through SLURM_CONF (`cluster.env`). `stop()` cancels all jobs and stops the daemons.

Under CI the cluster must come up; on a machine without root or packages `require()`
skips with the reason."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
CLUSTER_NAME = "agfsynctest"
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged"]


def _missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _apt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=900)


def require() -> None:
    """Install the packages when missing and possible; otherwise skip (fail under CI)."""
    if _missing() and os.geteuid() == 0 and shutil.which("apt-get"):
        if _apt("install", "-y", "--no-install-recommends", *PACKAGES).returncode != 0:
            _apt("update")
            _apt("install", "-y", "--no-install-recommends", *PACKAGES)
    reason = None
    if _missing():
        reason = f"SLURM packages missing ({', '.join(_missing())}) and cannot be installed (needs root and apt-get)"
    elif os.geteuid() != 0:
        reason = "a local SLURM cluster needs root (munge and slurmd run as root)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"under CI the SLURM tests must run: {reason}")
        pytest.skip(reason)


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _start_munge() -> None:
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return
    for directory in ("/etc/munge", "/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run([_sbin("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True)
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    subprocess.run(["runuser", "-u", "munge", "--", _sbin("munged")], check=True, capture_output=True)


class SlurmCluster:
    def __init__(self, root: Path, nodes: int = 2, cpus: int = 2, memory_mb: int = 512000):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.nodes = [f"n{i + 1}" for i in range(nodes)]
        self.cpus, self.memory_mb = cpus, memory_mb
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.linked_system_conf = False

    @property
    def env(self) -> dict:
        return {"SLURM_CONF": str(self.conf)}

    def write_conf(self) -> None:
        for sub in ("state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r = self.root
        nodes = [f"NodeName={name} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={16818 + i} CPUs={self.cpus} "
                 f"RealMemory={self.memory_mb} State=UNKNOWN" for i, name in enumerate(self.nodes)]
        self.conf.write_text("\n".join([
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            "SlurmUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/backfill",
            "SlurmdParameters=config_overrides", "SlurmctldPort=16817",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool/%n",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd-%n.log",
            f"SlurmctldPidFile={r}/run/slurmctld.pid", f"SlurmdPidFile={r}/run/slurmd-%n.pid",
            "KillWait=5", "MinJobAge=3600", "InactiveLimit=0", "Waittime=0", "MaxArraySize=1001",
            *nodes,
            f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    def link_system_conf(self) -> None:
        """Slurm does not pass SLURM_CONF into a job's environment, so `srun` inside a batch
        job (the plugin runs every job through it) reads the compiled-in default path:
        point it at our config while the cluster runs. A machine with a config of its own
        there (a real cluster) is left alone, and the tests skip."""
        if SYSTEM_CONF.is_symlink() and (not SYSTEM_CONF.exists() or CLUSTER_NAME in SYSTEM_CONF.read_text()):
            SYSTEM_CONF.unlink()  # left by a killed test run (dangling, or to a test cluster's config)
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            reason = f"{SYSTEM_CONF} exists (a real SLURM installation?); the test cluster will not replace it"
            if os.environ.get("CI"):
                pytest.fail(f"under CI the SLURM tests must run: {reason}")
            pytest.skip(reason)
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)
        self.linked_system_conf = True

    def start(self, timeout: float = 60) -> SlurmCluster:
        require()
        _start_munge()
        self.write_conf()
        self.link_system_conf()
        env = {**os.environ, **self.env}
        commands = [[_sbin("slurmctld"), "-D", "-f", str(self.conf)]]
        commands += [[_sbin("slurmd"), "-D", "-N", name, "-f", str(self.conf)] for name in self.nodes]
        for command in commands:
            self.procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
            time.sleep(0.5)
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            if state.stdout.split() == ["idle"] * len(self.nodes):
                return self
            time.sleep(1)
        logs = "\n".join(p.read_text()[-2000:] for p in (self.root / "log").glob("*.log"))
        self.stop()
        raise RuntimeError(f"the test SLURM cluster did not come up within {timeout:.0f} s:\n{logs}")

    def jobs(self) -> list[dict]:
        """Every job the controller remembers (MinJobAge): id, name, comment, state, nodes."""
        out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%j|%k|%T|%N"], env={**os.environ, **self.env},
                             capture_output=True, text=True, check=True)
        keys = ("id", "name", "comment", "state", "nodes")
        return [dict(zip(keys, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        env = {**os.environ, **self.env}
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        if self.linked_system_conf and SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.unlink()
        self.linked_system_conf = False

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
