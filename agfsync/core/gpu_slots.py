"""GPU binding for jobs that Snakemake runs on one machine (profiles/workstation).

Snakemake's `--resources gpu=N` caps how many GPUs' worth of jobs run at once, but it does
not say which devices a job may use: without more, every job would land on GPU 0. A GPU
job calls `bind_gpus(n)` before it touches CUDA; it takes an exclusive lock on n device
lock files (`<tmp>/agfsync-gpu-locks-<uid>/gpu<id>.lock`) that no running job holds, and
sets CUDA_VISIBLE_DEVICES to those devices. The locks are held until the process exits
(a crash releases them too). Inside a SLURM job, SLURM has already bound the devices and
nothing is done. Imports no torch."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_held: list = []  # open lock files of this process


def visible_devices(env: dict | None = None) -> list[str]:
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, line in enumerate(x for x in out.stdout.splitlines() if x.startswith("GPU "))]


def lock_dir() -> Path:
    root = os.environ.get("AGFSYNC_GPU_LOCK_DIR") or tempfile.gettempdir()
    return Path(root) / f"agfsync-gpu-locks-{os.getuid()}"


def bind_gpus(count: int, timeout_s: float = 3600.0, poll_s: float = 0.5) -> list[str] | None:
    """Claim `count` free devices for this process; None when there is nothing to bind."""
    count = int(count or 0)
    if count <= 0 or os.environ.get("SLURM_JOB_ID") or _held:
        return None
    devices = visible_devices()
    if not devices:
        return None
    if count > len(devices):
        raise RuntimeError(f"this job needs {count} GPU(s) but {len(devices)} are visible ({','.join(devices)})")
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        claimed = []
        for device in devices:
            handle = open(directory / f"gpu{device}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            claimed.append((device, handle))
            if len(claimed) == count:
                break
        if len(claimed) == count:
            _held.extend(handle for _, handle in claimed)
            chosen = [device for device, _ in claimed]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
            log.info("gpu: bound to device(s) %s (locks in %s)", ",".join(chosen), directory)
            return chosen
        for _, handle in claimed:
            handle.close()  # closing releases the lock
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {count} free GPU(s) among {','.join(devices)} within {timeout_s:.0f} s "
                               f"(locks in {directory})")
        time.sleep(poll_s)
