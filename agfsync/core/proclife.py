"""Process lifetime of a training run (pure: psutil and the standard library, no torch).

A trainer must die with whoever started it, and only one run may use a checkpoint
directory at a time.

- `watched_processes()`: what the launcher (agfsync.train.launch.run_training) lives for. Under
  Snakemake a rule's script runs as `snakemake -> bash -c ... -> python script`, so a
  `kill -9` of Snakemake leaves the shell alive: the launcher watches every ancestor up to
  the outermost Snakemake among them (the shell, Snakemake's job process under SLURM,
  Snakemake itself), or only its parent when none is Snakemake. Nothing above Snakemake
  (the user's login shell, slurmstepd, srun of the SLURM job step) is watched.
- `Lineage`: checks them (a dead or zombie process, or a pid reused by another process,
  counts as gone).
- `die_with_parent()`: a `preexec_fn` that asks Linux to SIGTERM a child (torchrun, or srun
  on several nodes) when the launcher dies, even by SIGKILL.
- `exit_with_parent()`: for the torchrun workers, which torchrun starts in their own session
  (so no signal to the agent's process group reaches them): a daemon thread that ends the
  worker when its parent, the torchrun agent, is gone (or was gone before it started).
- `stop_tree()`: SIGTERM to a child, a grace period, then SIGKILL to it and every process
  it had started (listed before the first signal, since workers are reparented once their
  agent exits).
- `DirLock`: an exclusive lock on a directory, `<directory>.lock` next to it (the trainer
  may delete and recreate the directory itself), holding {pid, host, started, command},
  kept with `fcntl.flock` on an open descriptor for the run's lifetime, and refreshed
  (mtime) as a heartbeat. A held lock is refused with an error naming the holder; a
  leftover lock of a process that is gone (flock released, pid gone on this host, or no
  heartbeat from another host) is taken over with a warning.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

GRACE_S = 20.0  # SIGTERM -> SIGKILL (torchrun itself gives its workers 30 s at most, then kills them)
HEARTBEAT_S = 10.0  # how often a lock holder refreshes the lock file's mtime
STALE_S = 3 * HEARTBEAT_S  # a lock of another host whose mtime did not move for this long is stale
PR_SET_PDEATHSIG = 1


class LockHeld(RuntimeError):
    """Another live process holds the directory."""


# -- the launcher's ancestors ---------------------------------------------------------------

def is_snakemake(cmdline: list[str]) -> bool:
    """`snakemake ...`, `python .../bin/snakemake ...` or `python -m snakemake ...`."""
    return any(Path(arg).name == "snakemake" for arg in cmdline[:2]) or cmdline[1:3] == ["-m", "snakemake"]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.Error, OSError):
        return []


def watched_processes(pid: int | None = None) -> list[psutil.Process]:
    """The ancestors of `pid` (this process) whose death must end it, nearest first: up to
    the outermost Snakemake among them, else the parent alone."""
    chain = psutil.Process(pid).parents()
    last = max((i for i, p in enumerate(chain) if is_snakemake(_cmdline(p))), default=0)
    return chain[:last + 1]


def describe(process: psutil.Process) -> str:
    """'pid 123 (snakemake --cores 2 ...)', from what was recorded when it was alive."""
    text = " ".join(getattr(process, "_agfsync_cmdline", None) or [])
    return f"pid {process.pid}" + (f" ({text[:120]})" if text else "")


class Lineage:
    """The watched ancestors of this process, checked with `gone()`."""

    def __init__(self, processes: list[psutil.Process] | None = None):
        self.processes = watched_processes() if processes is None else processes
        for process in self.processes:
            process._agfsync_cmdline = _cmdline(process)
        self.parent = os.getppid()

    def gone(self) -> psutil.Process | None:
        """The first watched process that is gone (exited, zombie, or its pid reused), else None."""
        for process in self.processes:
            try:
                if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                    return process
            except psutil.NoSuchProcess:
                return process
        if self.processes and os.getppid() != self.parent:  # the direct parent died: reparented
            return self.processes[0]
        return None


# -- children ---------------------------------------------------------------------------------

def die_with_parent(sig: int = signal.SIGTERM):
    """A Popen `preexec_fn` that makes the kernel send `sig` to the child when this process
    dies (Linux PR_SET_PDEATHSIG; None elsewhere). Closes the race of a parent that died
    between fork and prctl."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def stop_tree(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """Stop a child and everything it started: SIGTERM to the child (torchrun stops its
    workers, srun forwards it to every node's task), then, after `grace_s`, SIGKILL to the
    child and to every descendant that is left, including those that had left its session."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(family, timeout=0 if proc.returncode is None else max(1.0, grace_s / 4))
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    psutil.wait_procs(alive, timeout=5)


def is_torchrun(cmdline: list[str]) -> bool:
    """A torchrun agent: `torchrun ...` or `python -m torch.distributed.run ...`."""
    return any(Path(arg).name == "torchrun" for arg in cmdline[:2]) or "torch.distributed.run" in cmdline[1:3]


def exit_with_parent(poll_s: float = 1.0, what: str = "this process", parent_is=None) -> threading.Thread:
    """Start a daemon thread that ends this process (exit status 1, no cleanup: like a
    kill) once its parent is gone, i.e. it was reparented. For torchrun's workers, whose
    agent starts them in a new session: a killed agent leaves them running otherwise.
    `parent_is(cmdline)` closes the race of a parent that died before this was called:
    when the parent found now fails it, this process was already orphaned and exits."""
    parent = os.getppid()

    def leave(why: str) -> None:
        sys.stderr.write(f"{what}: {why}: exiting\n")
        sys.stderr.flush()
        os._exit(1)

    if parent_is is not None:
        try:
            cmdline = psutil.Process(parent).cmdline()
        except (psutil.Error, OSError):
            cmdline = []
        if not parent_is(cmdline):
            leave(f"its parent is gone (now pid {parent}: {' '.join(cmdline)[:120]})")

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                leave(f"its parent (pid {parent}) is gone")
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


# -- the directory lock -----------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class DirLock:
    """Exclusive use of `directory` by one run: `with DirLock(d, command): ...`, or
    acquire()/heartbeat()/release(). The lock file is `<directory>.lock`."""

    def __init__(self, directory, command: str = "", heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
        self.directory = Path(directory)
        self.path = self.directory.with_name(self.directory.name + ".lock")
        self.command, self.heartbeat_s, self.stale_s = command, heartbeat_s, stale_s
        self.fd: int | None = None
        self.host = socket.gethostname()
        self._beat = 0.0

    # what a holder looks like, and the error that names it
    def refusal(self, holder: dict) -> str:
        return (f"{self.directory} is in use by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
                f"{holder.get('started', '?')} (another train_dpo run?); stop it first, or delete {self.path} if that "
                "process is gone")

    @staticmethod
    def _read(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        try:
            holder = json.loads(data.decode("utf-8")) if data.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"pid": "?", "host": "?", "started": "?"}  # torn or foreign: nobody we could check
        return holder if isinstance(holder, dict) else {}

    def _flock(self, fd: int) -> bool | None:
        """True: locked; False: another holder has it; None: the file system has no flock."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                log.warning("%s: the file system does not support flock (%s): relying on pid and heartbeat only",
                            self.path, err)
                return None
            raise

    def _alive_here(self, holder: dict) -> bool:
        try:
            process = psutil.Process(int(holder["pid"]))
            started = holder.get("pid_started")
            return process.status() != psutil.STATUS_ZOMBIE and (
                started is None or abs(process.create_time() - float(started)) < 1.0)
        except (KeyError, TypeError, ValueError, psutil.Error):
            return False

    def _stale(self, holder: dict, fd: int, flocked: bool | None) -> str | None:
        """Why a recorded holder is gone (None: it is alive). Called with the flock held (or
        unsupported), so a holder on this host that still ran would have kept it."""
        if holder.get("host") == self.host:
            if flocked or not self._alive_here(holder):
                return "that process is gone"
            return None
        # another host: flock may not reach across hosts on this file system; its heartbeat does
        mtime = os.fstat(fd).st_mtime
        if time.time() - mtime > 2 * self.stale_s:
            return f"no heartbeat for {time.time() - mtime:.0f} s"
        deadline = time.monotonic() + self.stale_s
        log.info("%s: held by host %s until shown otherwise: watching its heartbeat for %.0f s", self.path,
                 holder.get("host"), self.stale_s)
        while time.monotonic() < deadline:
            time.sleep(min(1.0, self.heartbeat_s / 4))
            if os.fstat(fd).st_mtime != mtime:
                return None
        return f"no heartbeat for {self.stale_s:.0f} s"

    def acquire(self) -> DirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            flocked = self._flock(fd)
            if flocked is False:
                holder = self._read(fd)
                os.close(fd)
                raise LockHeld(self.refusal(holder))
            try:  # a holder that released in between unlinked the file we locked: lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = self._read(fd)
        if holder:
            why = self._stale(holder, fd, flocked)
            if why is None:
                os.close(fd)
                raise LockHeld(self.refusal(holder))
            log.warning("%s: taking over the stale lock of pid %s on host %s since %s (%s)", self.path,
                        holder.get("pid", "?"), holder.get("host", "?"), holder.get("started", "?"), why)
        me = psutil.Process()
        record = {"pid": me.pid, "host": self.host, "started": _now(), "pid_started": me.create_time(),
                  "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd, self._beat = fd, time.monotonic()
        return self

    def heartbeat(self) -> None:
        """Refresh the lock file's mtime (at most every heartbeat_s): a holder on another host sees it alive."""
        if self.fd is not None and time.monotonic() - self._beat >= self.heartbeat_s:
            os.utime(self.fd)
            self._beat = time.monotonic()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
