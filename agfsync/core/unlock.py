"""`agfsync unlock` (also `make unlock`): after Snakemake was killed (kill -9, a login
node reboot), remove the lock it left in .snakemake/locks, but only once nothing of that run is left.

Snakemake (9.27) records no owner in its lock (a list of paths, no pid or host) and never
detects a stale one: the next run stops with "Directory cannot be locked" until
`snakemake --unlock`, which removes the lock whatever still runs (a live run's too). This
checks first, then calls `snakemake --unlock`:

- no Snakemake process whose working directory is this one runs on this host;
- where SLURM is installed (`squeue` on PATH), none of your jobs started from this directory
  is pending or running: a killed Snakemake leaves its SLURM jobs running, and a rerun next to
  them would start the same jobs twice.

Exit 0: unlocked, or there was no lock; 1: something of the old run still runs (named).
Snakemake on another machine sharing this directory cannot be seen from here: stop it first."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from agfsync.core.proclife import is_snakemake


def live_snakemakes(directory: Path) -> list[str]:
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = process.info["cmdline"] or []
            if process.pid in mine or not is_snakemake(cmdline) or Path(process.cwd()).resolve() != directory:
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, OSError):
            continue
        found.append(f"pid {process.pid} ({' '.join(cmdline)[:120]})")
    return found


def live_slurm_jobs(directory: Path) -> list[str]:
    if shutil.which("squeue") is None:
        return []
    out = subprocess.run(["squeue", "--me", "--noheader", "--format=%i|%T|%k|%Z"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"squeue failed ({out.stderr.strip()}): cannot tell whether jobs of this directory still "
                         "run; check with `squeue --me` and run `snakemake --unlock` yourself")
    jobs = []
    for line in out.stdout.splitlines():
        fields = line.strip().split("|", 3)
        if len(fields) == 4 and fields[3] and Path(fields[3]).resolve() == directory:
            jobs.append(f"{fields[0]} ({fields[2]}, {fields[1]})")
    return jobs


def main(directory: str | os.PathLike = ".") -> int:
    directory = Path(directory).resolve()
    locks = sorted((directory / ".snakemake" / "locks").glob("*.lock"))
    if not locks:
        print(f"no Snakemake lock in {directory}: nothing to unlock")
        return 0
    running = live_snakemakes(directory)
    if running:
        print(f"Snakemake still runs in {directory}: {'; '.join(running)}. Its lock is not stale: let it finish "
              "or stop it, then run `agfsync unlock` again", file=sys.stderr)
        return 1
    jobs = live_slurm_jobs(directory)
    if jobs:
        ids = " ".join(job.split()[0] for job in jobs)
        print(f"SLURM jobs started from {directory} are still pending or running: {', '.join(jobs)}. They belong to "
              f"the Snakemake run that died: wait for them to end or cancel them (scancel {ids}), then run "
              "`agfsync unlock` again", file=sys.stderr)
        return 1
    print(f"no Snakemake runs in {directory} on {socket.gethostname()} and no SLURM job of it is left: "
          f"removing the stale lock ({len(locks)} lock file(s))")
    snakemake = Path(sys.executable).with_name("snakemake")
    # Our Snakefile and this very directory, named: a run folder (runs/NAME) holds no Snakefile,
    # and --directory keeps a config's `run:` from moving the unlock elsewhere.
    from agfsync.core.config import REPO_ROOT

    command = [str(snakemake) if snakemake.exists() else "snakemake", "-s", str(REPO_ROOT / "workflow" / "Snakefile"),
               "--directory", str(directory), "--unlock"]
    return subprocess.run(command, cwd=directory).returncode

