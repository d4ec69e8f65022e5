"""A toy preference set and two ways to run the trainer on it: in this pytest process
(`train_in_process`, one process, world size 1) and through torchrun (`run_trainer`, for the
runs with more than one process). Both take a config dict (`toy_config`), turned into the
typed settings rule train_dpo's job sees (`train_settings`), or typed settings as they are."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from agfsync.demo.toy import toy_cache  # noqa: F401 (re-exported for the tests)


def toy_config(demo_config: dict, tiny_models: Path, **train) -> dict:
    cfg = copy.deepcopy(demo_config)
    cfg["cpu_threads"] = 1  # two processes on a 2-core machine: one thread each (the trainer enforces it)
    cfg["models"]["sd15"]["pretrained"] = str(tiny_models / "sd1")
    cfg["models"]["sd15"]["train"].update({"lr": 1e-3, "global_batch": 4, "micro_batch": 1, "steps": 30,
                                            "beta_dpo": 500.0, "warmup_steps": 0})
    cfg["train"].update({"optimizer": "adamw8bit", "zero_stage": 2, "precision": "fp32", "lr_schedule": "constant",
                         "checkpoint_every": 5, "gradient_checkpointing": False, "gpus": 2, **train})
    return cfg


def train_settings(cfg, model: str = "sd15"):
    """The typed settings of rule train_dpo's job for `model` (tests/helpers.settings: the dict
    validated, defaults filled, cut to what the rule declares); Settings are returned as they are."""
    from helpers import settings

    from agfsync.core.sections import Settings

    return cfg if isinstance(cfg, Settings) else settings(cfg, "train_dpo", model=model)


def _stage_args(cfg, cache: Path, out: Path, checkpoints: Path, stop_after: int | None,
                model: str = "sd15") -> list[str]:
    """The trainer's command line arguments; the stage config is written into `checkpoints`
    as the launcher writes it (`settings.to_json()`)."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    stage = checkpoints / "stage_config.json"
    stage.write_text(train_settings(cfg, model).to_json())
    args = ["--stage-config", str(stage), "--model", model, "--cache", str(cache), "--out", str(out),
            "--checkpoints", str(checkpoints)]
    return args + (["--stop-after", str(stop_after)] if stop_after else [])


def run_trainer(cfg, cache: Path, out: Path, checkpoints: Path, processes: int = 2,
                stop_after: int | None = None) -> subprocess.CompletedProcess:
    """`processes` trainer processes through torchrun --standalone (gloo on the CPU)."""
    from agfsync.train.launch import torchrun_command

    args = _stage_args(cfg, cache, out, checkpoints, stop_after)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(torchrun_command(processes, args), capture_output=True, text=True, timeout=900, env=env)


@dataclass
class InProcessRun:
    """What a test reads of an in-process run, named as in subprocess.CompletedProcess:
    `stderr` holds the agfsync log lines ("LEVEL logger: message"), not DeepSpeed's output."""

    returncode: int
    stderr: str


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What DeepSpeed's ZeRO-3 replaces for the rest of the process ("This will persist unless
# manually reset", deepspeed.runtime.zero.partition_parameters): left in place, every later
# run in this process would compute its linear layers with ZeRO-3's version (other rounding).
PATCHED_BY_DEEPSPEED = [(torch.nn.functional, "linear"), (torch.nn.functional, "embedding")]


@contextlib.contextmanager
def single_process_world():
    """The environment of a one-process torchrun world, for one run. Afterwards everything
    the run may change is put back, so the next run (or test) starts as a fresh process
    would: the environment variables, torch's thread count (the trainer sets cpu_threads),
    torch's global generator, the root logger (main configures it), the torch functions
    DeepSpeed patches (PATCHED_BY_DEEPSPEED); and the process group is destroyed."""
    import torch.distributed as dist

    assert not dist.is_initialized(), "a process group is left over from an earlier in-process run"
    env, threads = dict(os.environ), torch.get_num_threads()
    patched = [(owner, name, getattr(owner, name)) for owner, name in PATCHED_BY_DEEPSPEED]
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    os.environ.pop("TORCHELASTIC_RUN_ID", None)  # main would watch a torchrun agent that is not there
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        if dist.is_initialized():  # main destroys it; this is for a run that did not get that far
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()
        torch.set_num_threads(threads)
        for owner, name, original in patched:
            setattr(owner, name, original)
        root.setLevel(root_level)
        root.handlers[:] = root_handlers
        os.environ.clear()
        os.environ.update(env)


def train_in_process(cfg, cache: Path, out: Path, checkpoints: Path,
                     stop_after: int | None = None, model: str = "sd15") -> InProcessRun:
    """One trainer process in this pytest process: agfsync.train.trainer.main with the
    arguments torchrun would pass, in a single_process_world. Exceptions other than the
    ones main reports (exit status 2) propagate."""
    from agfsync.train.trainer import main

    args = _stage_args(cfg, cache, out, checkpoints, stop_after, model)
    logger, lines = logging.getLogger("agfsync"), _Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    try:
        with single_process_world():
            returncode = main(args)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    return InProcessRun(returncode, "\n".join(lines.lines))


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def unet_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


PYTHON = sys.executable
