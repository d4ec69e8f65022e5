"""Launch of the DPO trainer (rule train_dpo): `torchrun --standalone` with one process per
GPU (train.gpus; gloo processes on a CPU). The stage config is written to a JSON file in
the checkpoint directory; the child's output goes to the rule's log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def torchrun_command(processes: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "agfsync.train", *args]


def check_gpus(cfg: dict, processes: int) -> None:
    """Fail before launching when the config asks for more GPUs than this node has."""
    if cfg.get("device") == "cpu":
        return
    import torch

    available = torch.cuda.device_count()
    if processes > available and (cfg.get("device") == "cuda" or available > 0 or processes > 1):
        raise RuntimeError(
            f"train.gpus asks for {processes} GPU(s) per node but this node has {available} CUDA device(s); "
            "lower train.gpus, or set device: cpu to train with CPU processes")


def run_training(cfg: dict, model_name: str, cache_dir, out_dir, checkpoints, *, log_path=None,
                 processes: int | None = None, stop_after: int | None = None) -> int:
    checkpoints = Path(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    stage_config = checkpoints / "stage_config.json"
    stage_config.write_text(json.dumps(cfg, indent=1))
    processes = processes or cfg["train"]["gpus"]
    check_gpus(cfg, processes)
    args = ["--stage-config", str(stage_config), "--model", model_name, "--cache", str(cache_dir),
            "--out", str(out_dir), "--checkpoints", str(checkpoints)]
    if stop_after is not None:
        args += ["--stop-after", str(stop_after)]
    command = torchrun_command(processes, args)
    log.info("train: %s", " ".join(command))
    threads = max(1, (os.cpu_count() or 1) // processes)  # CPU runs: share the cores between processes
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    if log_path:
        with open(log_path, "a") as handle:
            result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    else:
        result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"training of {model_name} failed (exit {result.returncode}); see {log_path or 'the output'}"
                           f"; checkpoints in {checkpoints} are kept and a rerun resumes from the latest")
    return result.returncode
