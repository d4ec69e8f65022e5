"""A toy preference set and a runner for the distributed trainer tests."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from agfsync.testing import toy_cache  # noqa: F401 (re-exported for the tests)


def toy_config(demo_config: dict, tiny_models: Path, **train) -> dict:
    cfg = copy.deepcopy(demo_config)
    cfg["cpu_threads"] = 1  # two processes on a 2-core machine: one thread each (the trainer enforces it)
    cfg["models"]["sd15"]["pretrained"] = str(tiny_models / "sd1")
    cfg["models"]["sd15"]["train"].update({"lr": 1e-3, "global_batch": 4, "micro_batch": 1, "steps": 30,
                                            "beta_dpo": 500.0, "warmup_steps": 0})
    cfg["train"].update({"optimizer": "adamw8bit", "zero_stage": 2, "precision": "fp32", "lr_schedule": "constant",
                         "checkpoint_every": 5, "gradient_checkpointing": False, "gpus": 2, **train})
    return cfg


def run_trainer(cfg: dict, cache: Path, out: Path, checkpoints: Path, processes: int = 2,
                stop_after: int | None = None) -> subprocess.CompletedProcess:
    checkpoints.mkdir(parents=True, exist_ok=True)
    stage = checkpoints / "stage_config.json"
    stage.write_text(json.dumps(cfg))
    args = ["--stage-config", str(stage), "--model", "sd15", "--cache", str(cache), "--out", str(out),
            "--checkpoints", str(checkpoints)]
    if stop_after:
        args += ["--stop-after", str(stop_after)]
    from agfsync.launch import torchrun_command

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(torchrun_command(processes, args), capture_output=True, text=True, timeout=900, env=env)


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def unet_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


PYTHON = sys.executable
